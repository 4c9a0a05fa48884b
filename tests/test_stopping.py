import torch

from tbhcli.training.loop import eta_text
from tbhcli.training.stopping import EarlyStopping, copy_state


def run_rule(rule, scores, every=100):
    """Feed a score every `every` steps; return the step at which the rule stops (or None)."""
    for i, score in enumerate(scores, start=1):
        rule.update(i * every, score)
        if rule.should_stop(i * every):
            return i * every
    return None


def test_stops_patience_steps_after_the_best_and_keeps_it():
    rule = EarlyStopping(patience=300, min_steps=0)
    stopped = run_rule(rule, [0.2, 0.3, 0.35, 0.36, 0.359, 0.36, 0.355, 0.36, 0.5])
    assert stopped == 700 and rule.best_step == 400 and rule.best_score == 0.36


def test_gains_below_min_delta_are_a_plateau():
    rule = EarlyStopping(patience=200, min_steps=0, min_delta=0.01)
    assert run_rule(rule, [0.30, 0.305, 0.309, 0.31, 0.5]) == 300
    assert rule.best_step == 100


def test_never_stops_before_min_steps_nor_while_improving():
    rule = EarlyStopping(patience=100, min_steps=600)
    assert run_rule(rule, [0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]) == 600
    assert run_rule(EarlyStopping(100, 0), [0.1 * i for i in range(1, 30)]) is None


def test_state_round_trips_and_copies_are_detached():
    rule = EarlyStopping(patience=5, min_steps=1)
    rule.update(10, 0.5)
    assert EarlyStopping(**rule.state()) == rule
    layer = torch.nn.Linear(2, 2)
    saved = copy_state(layer)
    with torch.no_grad():
        layer.weight.add_(1)
    assert not torch.equal(saved["weight"], layer.weight)


def test_earliest_stop_is_where_the_rule_stops_without_further_gain():
    """The lower bound of the training ETA: with no gain after `step`, the rule stops there."""
    for scores in ([0.3], [0.3, 0.5], [0.3, 0.5, 0.6, 0.7, 0.8, 0.9]):
        rule = EarlyStopping(patience=300, min_steps=500)
        for i, score in enumerate(scores, start=1):
            rule.update(i * 100, score)
        step = len(scores) * 100
        earliest = rule.earliest_stop(step)
        flat = [scores[-1]] * 20  # no gain from here on
        assert run_rule(EarlyStopping(300, 500), scores + flat) == earliest
    assert EarlyStopping(300, 500).earliest_stop(0) == 500


def test_eta_counts_down_to_the_cap_or_from_the_earliest_stop():
    assert eta_text(100, 10.0, 1000) == "1:30 left"
    assert eta_text(100, 10.0, 40_000, earliest=500) == "0:40-1:06:30 left"
    assert eta_text(0, 0.0, 1000) == "" and eta_text(1000, 5.0, 1000) == ""
