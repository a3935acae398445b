"""`predict_records` runs a model once per image: outputs are remembered by model content."""

from __future__ import annotations

import numpy as np


def test_outputs_are_remembered_per_model_content_and_image(eval_env, monkeypatch):
    from collections import OrderedDict

    import torch

    from visionline.data import DatasetRepo
    from visionline.evaluate import _predict, predict_records
    from visionline.train import load_model

    monkeypatch.setattr(_predict, "_REMEMBERED", OrderedDict())  # other tests ran this model

    repo = DatasetRepo(eval_env.project)
    test = repo.get(eval_env.dataset).split_records("test")
    model, spec = load_model(eval_env.model)
    seen: list[int] = []

    def count_images(model):
        forward = model.predict

        def counted(inputs):
            seen.append(len(inputs))
            return forward(inputs)

        model.predict = counted

    count_images(model)
    first = predict_records(model, spec, test[:40], repo.blobs, batch_size=16)
    assert sum(seen) == 40
    again = predict_records(model, spec, test[::-1], repo.blobs, batch_size=16)
    assert sum(seen) == 40 + len(test) - 40  # only the images it had not seen ran
    np.testing.assert_array_equal(again.logits[::-1][:40], first.logits)
    assert [r.sha256 for r in again.records] == [r.sha256 for r in test[::-1]]
    assert list(again.labels[::-1][:40]) == list(first.labels)

    fresh, _ = load_model(eval_env.model)  # the same weights loaded again: nothing runs
    count_images(fresh)
    predict_records(fresh, spec, test, repo.blobs)
    assert sum(seen) == len(test)
    with torch.no_grad():
        fresh.head.bias[0] += 1.0  # other weights, other outputs: every image runs again
    changed = predict_records(fresh, spec, test, repo.blobs)
    assert sum(seen) == 2 * len(test)
    assert not np.allclose(changed.logits, again.logits[::-1])
