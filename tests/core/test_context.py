"""The training context's mini-batches: the same batches whichever way they are gathered."""
import pytest
import torch

from bench.context import TrainContext, gathered_batches, per_batch_gather


def _data(n=103):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 10, (n,), generator=g)


def _context(device: str) -> TrainContext:
    return TrainContext(device=torch.device(device), seed=0, generator=torch.Generator().manual_seed(7),
                        artifacts=None, model_of=None)


def test_one_gather_per_epoch_gives_the_batches_of_one_gather_per_batch():
    x, y = _data()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    one = list(gathered_batches(x, y, order, 16, torch.device("cpu")))
    each = list(per_batch_gather(x, y, order, 16, torch.device("cpu")))
    assert [len(b) for b, _ in one] == [16] * 6 + [7]
    assert len(one) == len(each)
    for (xa, ya), (xb, yb) in zip(one, each):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batches_cover_the_data_once_in_the_seeded_order():
    x, y = _data()
    first = list(_context("cpu").batches(x, y, 10))
    again = list(_context("cpu").batches(x, y, 10))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, again))
    seen = torch.cat([b for b, _ in first]).flatten(1)
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, x.flatten(1).tolist()))


@pytest.mark.gpu
def test_batches_on_cuda_equal_those_on_the_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, y = _data(5000)
    cpu = list(_context("cpu").batches(x, y, 32))
    cuda = list(_context("cuda").batches(x, y, 32))
    assert len(cpu) == len(cuda)
    for (xa, ya), (xb, yb) in zip(cpu, cuda):
        assert xb.is_cuda and torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())
