import torch

from captioner.models.sampling import RowSampler, caption_seed, row_generators


def test_each_row_draws_from_its_own_stream():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    picks = RowSampler(row_generators([1, 2, 3], 1, torch.device("cpu")), 1.0, 1.0)(None, scores)
    assert ((picks == 0).sum(dim=1) == 1).all() and torch.isinf(picks).sum() == 3 * 49  # one token left per row
    alone = RowSampler(row_generators([2], 1, torch.device("cpu")), 1.0, 1.0)(None, scores[1:2])
    assert torch.equal(picks[1:2], alone)


def test_nucleus_keeps_the_smallest_set_holding_top_p():
    scores = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]]))
    drawn = {int(RowSampler(row_generators([s], 1, torch.device("cpu")), 1.0, 0.8)(None, scores).argmax())
             for s in range(200)}
    assert drawn == {0, 1}  # 0.6 alone is short of 0.8; with 0.3 it is reached; the tail is never drawn


def test_candidates_and_languages_get_streams_of_their_own():
    gens = row_generators([caption_seed("en", 5), caption_seed("fr", 5)], 2, torch.device("cpu"))
    assert len({int(torch.randint(10**9, (1,), generator=g)) for g in gens}) == 4
