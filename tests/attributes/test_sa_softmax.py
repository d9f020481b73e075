"""SA-softmax: dynamic-tag rules, state round trip, loss, test-time confidence and grades."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attributes.sa_softmax import (
    GRADES,
    SASchedule,
    SATagState,
    grade,
    grade_index,
    max_softmax_confidence,
    sa_cross_entropy,
    sa_predict,
)


def _state(labels, valid=None, num_classes=3, threshold=0.5) -> SATagState:
    labels = torch.tensor(labels).long()
    if labels.dim() == 1:
        labels = labels.unsqueeze(1)
    valid = torch.ones_like(labels, dtype=torch.bool) if valid is None else torch.tensor(valid).bool().reshape(labels.shape)
    return SATagState(labels.shape[0], labels.shape[1], num_classes, labels, valid, threshold=threshold)


def _feed(state: SATagState, image: int, predictions: list[int]) -> None:
    for p in predictions:
        state.record(torch.tensor([image]), torch.tensor([[p]]))


def test_relabel_rule_uses_strict_accuracy_threshold():
    state = _state([0, 1, 2, 0])  # N = 3, unrecognizable = 3
    _feed(state, 0, [1, 1, 0, 2])  # 1/4 correct -> relabel
    _feed(state, 1, [1, 1, 1, 0])  # 3/4 -> keep
    _feed(state, 2, [2, 0])  # exactly 0.5 is not below the threshold -> keep
    stats = state.end_window()  # image 3 was never seen -> untouched
    assert state.current_labels(torch.arange(4)).flatten().tolist() == [3, 1, 2, 0]
    assert stats["relabelled"] == 1 and stats["restored"] == 0 and stats["unrecognizable_now"] == 1
    assert stats["counted"] == 3 and stats["relabelled_per_task"] == [1]
    assert state.unrecognizable_mask().flatten().tolist() == [True, False, False, False]


def test_relabelled_image_is_correct_while_predicted_unrecognizable_and_restored_otherwise():
    state = _state([0, 1])
    _feed(state, 0, [2, 2, 2])
    _feed(state, 1, [2, 2, 2])
    state.end_window()
    assert state.current_labels(torch.arange(2)).flatten().tolist() == [3, 3]
    # window 2: image 0 still predicted N+1 (correct against its current label) -> keeps the tag;
    # image 1 now predicted as its true class (wrong against N+1) -> true label restored
    _feed(state, 0, [3, 3, 1])
    _feed(state, 1, [1, 1, 3])
    assert state.correct.flatten().tolist() == [2, 1]
    stats = state.end_window()
    assert state.current_labels(torch.arange(2)).flatten().tolist() == [3, 1]
    assert stats["restored"] == 1 and stats["relabelled"] == 0 and stats["unrecognizable_now"] == 1
    # a restored image is judged against its true label again (and may be relabelled again)
    _feed(state, 1, [0, 0])
    state.end_window()
    assert state.current_labels(torch.tensor([1])).tolist() == [[3]]


def test_invalid_entries_are_never_counted_or_relabelled():
    # two tasks; image 0 has no label for task 1, image 1 none for task 0
    labels = torch.tensor([[0, 0], [1, 1]])
    valid = torch.tensor([[True, False], [False, True]])
    state = SATagState(2, 2, [2, 2], labels, valid)
    assert state.current_labels(torch.arange(2)).tolist() == [[0, -1], [-1, 1]]
    for _ in range(4):
        state.record(torch.arange(2), torch.tensor([[1, 2], [2, 0]]))  # everything wrong
    assert state.seen.tolist() == [[4, 0], [0, 4]] and state.correct.sum() == 0
    stats = state.end_window()
    assert state.current_labels(torch.arange(2)).tolist() == [[2, -1], [-1, 2]]
    assert stats["relabelled"] == 2 and stats["relabelled_per_task"] == [1, 1]


def test_invalid_entries_may_hold_garbage_but_valid_labels_are_checked():
    labels = torch.tensor([[7], [1]])  # image 0's value is meaningless: it has no label
    SATagState(2, 1, 2, labels, torch.tensor([[False], [True]]))
    with pytest.raises(ValueError, match="image 0"):
        SATagState(2, 1, 2, labels, torch.tensor([[True], [True]]))


def test_counters_reset_after_each_window():
    state = _state([0, 1])
    _feed(state, 0, [1, 1])
    _feed(state, 1, [1])
    state.end_window()
    assert state.seen.sum() == 0 and state.correct.sum() == 0
    before = state.current.clone()
    stats = state.end_window()  # nothing seen in this window: nothing may change
    assert torch.equal(state.current, before) and stats["relabelled"] == stats["restored"] == stats["counted"] == 0
    # counts of the old window must not leak into the next one: image 0 (now N+1) predicted
    # N+1 once -> accuracy 1/1, keeps its tag
    _feed(state, 0, [3])
    state.end_window()
    assert state.current_labels(torch.tensor([0])).tolist() == [[3]]


def test_duplicate_indices_in_a_batch_count_twice():
    state = _state([0])
    state.record(torch.tensor([0, 0, 0]), torch.tensor([[0], [1], [1]]))
    assert state.seen.tolist() == [[3]] and state.correct.tolist() == [[1]]


def test_state_dict_round_trip_mid_window():
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (50, 4))
    valid = torch.rand(50, 4) > 0.2
    a = SATagState(50, 4, 2, labels, valid)
    for _ in range(5):  # one full window, then half of the next
        idx = torch.randint(0, 50, (16,))
        a.record(idx, torch.randint(0, 3, (16, 4)))
    a.end_window()
    for _ in range(3):
        idx = torch.randint(0, 50, (16,))
        a.record(idx, torch.randint(0, 3, (16, 4)))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = SATagState(50, 4, 2, labels, valid)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert b.windows_completed == 1 and torch.equal(a.seen, b.seen) and torch.equal(a.current, b.current)
    idx, pred = torch.randint(0, 50, (16,)), torch.randint(0, 3, (16, 4))
    a.record(idx, pred)
    b.record(idx, pred)
    assert a.end_window() == b.end_window()
    assert torch.equal(a.current_labels(torch.arange(50)), b.current_labels(torch.arange(50)))


def test_load_state_dict_refuses_other_labels():
    labels = torch.randint(0, 2, (10, 2), generator=torch.Generator().manual_seed(1))
    valid = torch.ones(10, 2, dtype=torch.bool)
    state = SATagState(10, 2, 2, labels, valid).state_dict()
    with pytest.raises(ValueError, match="different training labels"):
        SATagState(10, 2, 2, 1 - labels, valid).load_state_dict(state)
    with pytest.raises(ValueError, match="num_classes"):
        SATagState(10, 2, 3, labels, valid).load_state_dict(state)


def test_sa_cross_entropy_ignores_missing_targets():
    torch.manual_seed(0)
    logits = torch.randn(6, 2, 4)
    targets = torch.tensor([[0, 3], [-1, 1], [2, -1], [3, 0], [-1, -1], [1, 2]])
    loss = sa_cross_entropy(logits, targets, 3)
    keep = targets >= 0
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)
    # the value at an ignored entry must not matter
    moved = logits.clone()
    moved[1, 0] += 100
    torch.testing.assert_close(sa_cross_entropy(moved, targets, 3), loss)


def test_plain_phase_is_exact_softmax_over_real_classes():
    torch.manual_seed(0)
    logits = torch.randn(8, 5, requires_grad=True)  # one task, N = 4 (+ unrecognizable)
    targets = torch.randint(0, 4, (8,))
    loss = sa_cross_entropy(logits, targets, 4, sa_active=False)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, :4], targets))
    loss.backward()
    assert torch.all(logits.grad[:, 4] == 0)  # the N+1-th output is not trained in the plain phase
    with pytest.raises(ValueError, match="plain phase"):
        sa_cross_entropy(logits, torch.full((8,), 4), 4, sa_active=False)
    with pytest.raises(ValueError, match="SA phase"):
        sa_cross_entropy(logits, torch.full((8,), 5), 4, sa_active=True)


def test_padded_tasks_and_list_layout():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 5)  # task 0: N = 2, task 1: N = 4
    padded = torch.cat([a, torch.full((5, 2), 123.0)], 1)  # junk in the padding is ignored
    stacked = torch.stack([padded, b], 1)
    targets = torch.tensor([[0, 4], [2, 1], [1, -1], [-1, 3], [2, 0]])
    expected = (F.cross_entropy(a, targets[:, 0].clamp(min=0), reduction="none")[targets[:, 0] >= 0].sum()
                + F.cross_entropy(b, targets[:, 1].clamp(min=0), reduction="none")[targets[:, 1] >= 0].sum()) / 8
    torch.testing.assert_close(sa_cross_entropy(stacked, targets, [2, 4]), expected)
    torch.testing.assert_close(sa_cross_entropy([a, b], targets, [2, 4]), expected)
    pred = sa_predict(stacked, [2, 4])
    torch.testing.assert_close(pred.probs[:, 0, :2], a[:, :2].softmax(-1))
    assert torch.all(pred.probs[:, 0, 2:] == 0)
    torch.testing.assert_close(pred.confidence[:, 1], 1 - b.softmax(-1)[:, 4])
    torch.testing.assert_close(pred.confidence[:, 0], 1 - a.softmax(-1)[:, 2])


def test_sa_predict_binary_layout():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 5.0]]])  # one image, 2 attributes x (no, yes, unrec.)
    pred = sa_predict(logits)
    assert pred.pred.tolist() == [[0, 0]]
    torch.testing.assert_close(pred.probs[0, 0], torch.tensor([2.0, 0.0]).softmax(0))
    torch.testing.assert_close(pred.confidence[0], 1 - logits[0].softmax(-1)[:, 2])
    assert grade(pred.confidence) == ["S", "D"]
    single = sa_predict(logits[:, 1])  # [B, C] form
    assert single.probs.shape == (1, 2) and single.confidence.shape == (1,)


def test_grade_boundaries_lower_bound_inclusive():
    c = torch.tensor([1.0, 0.8, 0.7999, 0.6, 0.5999, 0.4, 0.3999, 0.2, 0.1999, 0.0])
    assert grade(c) == ["S", "S", "A", "A", "B", "B", "C", "C", "D", "D"]
    assert grade_index(torch.tensor([0.8], dtype=torch.float64)).tolist() == [0]
    assert grade(0.61) == ["A"] and grade(0.79999999) == ["A"] and GRADES == ("S", "A", "B", "C", "D")
    with pytest.raises(ValueError, match="NaN"):
        grade(torch.tensor([float("nan")]))


def test_max_softmax_confidence():
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    torch.testing.assert_close(max_softmax_confidence(logits), torch.tensor([0.5, 1 / (1 + torch.exp(torch.tensor(-10.0)))]))


def test_schedule_epochs_and_steps_agree():
    s = SASchedule(plain_epochs=3, window_epochs=2)
    assert [s.active(e) for e in range(6)] == [False, False, False, True, True, True]
    assert [e for e in range(12) if s.window_ends(e)] == [4, 6, 8, 10]
    assert [s.window_index(e) for e in (2, 3, 4, 5)] == [-1, 0, 0, 1]
    # 10 images, batch 5: two steps per epoch; step-level ends fall on the epochs' last steps
    ends = [step for step in range(24) if s.window_ends_at_step(step, 5, 10)]
    assert ends == [9, 13, 17, 21]
    assert [s.active_at_step(step, 5, 10) for step in (5, 6)] == [False, True]
    # batch that does not divide the set: exactly one end per window, never before SA starts
    ends = [step for step in range(200) if s.window_ends_at_step(step, 3, 10)]
    assert len(ends) == len(set((step + 1) * 3 // 20 for step in ends)) and ends[0] == (50 - 1) // 3
    with pytest.raises(ValueError):
        SASchedule(-1)


def test_toy_noisy_labels_are_relabelled_and_grade_s_is_more_accurate():
    """2-D Gaussian blobs, 20% flipped training labels, tiny MLP: the first SA window tags
    mostly the flipped points, and grade-S predictions on clean test data beat the overall
    accuracy."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    k, centers = 3, torch.tensor([[0.0, 2.0], [-1.73, -1.0], [1.73, -1.0]])

    def blobs(n):
        y = torch.arange(k).repeat_interleave(n)
        return centers[y] + torch.randn(len(y), 2, generator=gen), y

    x, y = blobs(200)
    flipped = torch.rand(len(y), generator=gen) < 0.2
    noisy = y.clone()
    noisy[flipped] = (y[flipped] + torch.randint(1, k, (int(flipped.sum()),), generator=gen)) % k
    x_test, y_test = blobs(500)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, k + 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = SATagState(len(y), 1, k, noisy.unsqueeze(1), torch.ones(len(y), 1, dtype=torch.bool))
    schedule = SASchedule(plain_epochs=20, window_epochs=5)
    windows = []
    for epoch in range(30):
        active = schedule.active(epoch)
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), 100):
            idx = perm[start:start + 100]
            out = model(x[idx])
            targets = state.current_labels(idx) if active else noisy[idx].unsqueeze(1)
            loss = sa_cross_entropy(out.unsqueeze(1), targets, k, sa_active=active)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if active:
                state.record(idx, out.detach().argmax(-1, keepdim=True))
        if schedule.window_ends(epoch):
            stats = state.end_window()
            tagged = state.unrecognizable_mask()[:, 0]
            windows.append((stats, tagged))
    assert len(windows) == 2
    stats, tagged = windows[0]
    precision = float(flipped[tagged].float().mean())
    recall = float(tagged[flipped].float().mean())
    assert stats["relabelled"] > 50 and precision > 0.6 and recall > 0.85, (stats, precision, recall)  # base rate 0.2
    # the model cannot isolate flipped points inside clean clusters, so it stops putting them
    # in N+1 and the restore rule gives most of them their labels back
    assert windows[1][0]["restored"] > 0.5 * stats["relabelled"]
    with torch.no_grad():
        pred = sa_predict(model(x_test))
    correct = pred.pred == y_test
    s_grade = grade_index(pred.confidence) == 0
    assert 0.2 < float(s_grade.float().mean()) < 1.0
    assert float(correct[s_grade].float().mean()) > float(correct.float().mean()) + 0.02


def test_gamblers_loss_is_the_log_of_the_bet_that_pays():
    """-log(p_y + p_N / o) over the N+1 softmax, o = 1 + reward (N - 1), padding masked out,
    unlabelled entries ignored."""
    from attributes.sa_softmax import gamblers_loss

    torch.manual_seed(0)
    logits = torch.randn(4, 2, 6)                 # task 0: 2 classes (+1), task 1: 5 classes (+1)
    logits[:, 0, 3:] = 100.0                      # padding of the binary task: must not matter
    targets = torch.tensor([[1, 4], [0, -1], [-1, 2], [1, 0]])
    got = gamblers_loss(logits, targets, [2, 5], reward=0.5)
    want = []
    for b in range(4):
        for t, (n, payoff) in enumerate(((2, 1.5), (5, 3.0))):
            if targets[b, t] < 0:
                continue
            p = torch.softmax(logits[b, t, :n + 1], dim=0)
            want.append(-torch.log(p[targets[b, t]] + p[n] / payoff))
    torch.testing.assert_close(got, torch.stack(want).mean())
    with pytest.raises(ValueError, match="reward"):
        gamblers_loss(logits, targets, [2, 5], reward=0.0)
    with pytest.raises(ValueError, match="outside the real classes"):
        gamblers_loss(logits, torch.tensor([[2, 0]] * 4), [2, 5], reward=0.5)


def test_gamblers_loss_rewards_abstaining_only_where_the_answer_is_wrong():
    from attributes.sa_softmax import gamblers_loss

    confident_yes = torch.tensor([[-4.0, 4.0, 0.0]])
    more_abstention = confident_yes + torch.tensor([[0.0, 0.0, 3.0]])
    right, wrong = torch.tensor([1]), torch.tensor([0])
    assert gamblers_loss(more_abstention, right, 2, 0.6) > gamblers_loss(confident_yes, right, 2, 0.6)
    assert gamblers_loss(more_abstention, wrong, 2, 0.6) < gamblers_loss(confident_yes, wrong, 2, 0.6)


def test_group_loss_uses_the_gamblers_loss_on_true_labels_once_active():
    """With a gamblers' reward an active SA head learns from the true labels (tags, if any were
    given, are ignored); before it is active it is plain softmax over the real classes."""
    from attributes.heads import HeadConfig, group_loss, plan_groups
    from attributes.sa_softmax import gamblers_loss
    from data_prep.datasets.schema import LabelSchema, Task, TaskKind

    schema = LabelSchema((Task("Smiling", TaskKind.BINARY), Task("Male", TaskKind.BINARY)))
    group = plan_groups("faces", schema, HeadConfig(sa_softmax=True))[0]
    torch.manual_seed(1)
    out = torch.randn(5, 6)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    mask = torch.ones_like(targets, dtype=torch.bool)
    mask[2, 1] = False
    tags = torch.full((5, 2), 2)                   # every tag "unrecognizable": must not be used
    labels = torch.where(mask, targets.long(), torch.full_like(targets, -1, dtype=torch.long))
    got = group_loss(group, out, targets, mask, tags, sa_active=True, gamblers_reward=0.6)
    torch.testing.assert_close(got, gamblers_loss(out.view(5, 2, 3), labels, 2, 0.6))
    plain = group_loss(group, out, targets, mask, None, sa_active=False, gamblers_reward=0.6)
    torch.testing.assert_close(plain, sa_cross_entropy(out.view(5, 2, 3), labels, 2, sa_active=False))


def test_sa_method_is_checked():
    from attributes.config import SAConfig
    from engine.config import ConfigError

    with pytest.raises(ConfigError, match="sa.method"):
        SAConfig(method="soft")
    with pytest.raises(ConfigError, match="gamblers_reward"):
        SAConfig(method="gamblers", gamblers_reward=1.5)
