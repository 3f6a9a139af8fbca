import torch

from worker.scoring import attempt_logits


def test_rows_of_different_lengths_match_single_forwards(tiny):
    contexts = [[4, 5, 6], [7, 8]]
    attempts = [[9, 10], [11, 12, 13, 14]]
    with torch.no_grad():
        logits, mask = attempt_logits(tiny.model, contexts, attempts)
        assert logits.shape[:2] == (2, 4)
        assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
        for i, (c, a) in enumerate(zip(contexts, attempts, strict=True)):
            alone = tiny.model(torch.tensor([c + a])).logits[0, len(c) - 1 : len(c) + len(a) - 1]
            torch.testing.assert_close(logits[i, : len(a)], alone, atol=1e-5, rtol=1e-5)
