"""Split properties (docs/design.md §4): balanced, disjoint, deterministic per seed, by group, refused when
impossible."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_bench.data import make_split
from ssl_bench.errors import UserError

Y = np.repeat(np.arange(10), 100)  # 1,000 samples, 100 per class


def split(**kw):
    args = dict(labels=50, val_size=200, num_classes=10, seed=0)
    args.update(kw)
    return make_split(Y, **args)


def test_labeled_set_is_class_balanced():
    s = split(labels=50)
    assert np.bincount(Y[s.labeled], minlength=10).tolist() == [5] * 10


def test_validation_is_carved_first_and_disjoint_from_training():
    s = split()
    assert len(s.val) == 200
    assert not set(s.val) & set(s.labeled)
    assert not set(s.val) & set(s.unlabeled)
    # everything that is not validation is unlabeled training data (labeled samples included)
    assert sorted(set(s.unlabeled) | set(s.val)) == list(range(len(Y)))
    assert set(s.labeled) <= set(s.unlabeled)


def test_exclude_labeled_keeps_labeled_out_of_unlabeled():
    s = split(exclude_labeled=True)
    assert not set(s.labeled) & set(s.unlabeled)
    assert len(s.labeled) + len(s.unlabeled) + len(s.val) == len(Y)


def test_same_seed_same_split_and_other_seed_differs():
    a, b, c = split(seed=3), split(seed=3), split(seed=4)
    for part in ("val", "labeled", "unlabeled"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    assert a.fingerprint("d") == b.fingerprint("d")
    assert not np.array_equal(a.labeled, c.labeled)
    assert not np.array_equal(a.val, c.val)
    assert a.fingerprint("d") != c.fingerprint("d")


def test_all_labels():
    s = split(labels=None)
    assert np.array_equal(s.labeled, s.unlabeled)


def test_groups_are_never_cut():
    groups = np.arange(len(Y)) // 10  # 100 recordings of 10 windows, one class each
    s = make_split(Y, labels=20, val_size=150, num_classes=10, seed=1, groups=groups)
    val_g, lab_g = set(groups[s.val]), set(groups[s.labeled])
    ulb_g = set(groups[s.unlabeled])
    assert not val_g & lab_g and not val_g & ulb_g
    for part in (s.val, s.labeled, s.unlabeled):  # whole recordings only
        for g in set(groups[part]):
            assert set(np.flatnonzero(groups == g)) <= set(part)
    assert len(lab_g) == 20 and np.bincount(Y[s.labeled], minlength=10).tolist() == [20] * 10


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(labels=55), "not a positive multiple of the 10 classes"),
        (dict(labels=900), "class"),
        (dict(val_size=1000), "too little training data"),
        (dict(val_size=0), "at least 1"),
        (dict(labels=-10), "positive"),
    ],
)
def test_impossible_requests_are_refused(kw, message):
    with pytest.raises(UserError, match=message):
        split(**kw)
