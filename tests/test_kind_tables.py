"""Tables: CSV and parquet sources (numeric and categorical columns, missing values, the label column named or
absent, ragged rows reported and skipped), statistics from the training rows, the encoding, the views and
T-JEPA's masks, the feature-token encoder, and the GBDT protocol."""
import random

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.config import ConfigError
from selfsup.data import DataError, open_data
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.base import FeatureSplits
from selfsup.views.table import FeatureSubsets, TableViewSpec, collate_rows, make_table_view
from kind_utils import table_rows


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_a_csv_with_ragged_rows_categories_and_missing_values(tmp_path):
    header, rows, labels = table_rows(80)
    bad = [header[:3]]  # a ragged row: too few fields
    write_csv(tmp_path / "t.csv", header + ["species"], [r + [f"s{y}"] for r, y in zip(rows, labels)] + bad)
    splits = open_data(tmp_path / "t.csv", label_column="species", holdout_fraction=0.25)
    train, test = splits.train, splits.test
    assert len(train) + len(test) == 80 and train.classes == ["s0", "s1", "s2", "s3"]
    assert [r for _, r in train.bad_files] == ["3 fields, the header has 9"]
    stats = train.table_stats
    assert [c.kind for c in stats.columns] == ["numeric"] * 6 + ["categorical"] * 2
    assert stats.cardinalities == [0] * 6 + [3, 2] and train.encoder_options == {"cardinalities": stats.cardinalities}
    row = train.get_image(0)
    assert row.shape == (2, 8) and row[1].sum() == 7  # one value missing in every row
    numeric = train.rows[:, 0, :6][train.rows[:, 1, :6] > 0]
    assert abs(float(numeric.mean())) < 0.3  # standardised with the training rows' statistics


def test_the_label_column_is_found_or_absent_and_a_wrong_name_is_an_error(tmp_path):
    header, rows, labels = table_rows(40)
    write_csv(tmp_path / "labelled.csv", header + ["target"], [r + [y] for r, y in zip(rows, labels)])
    assert open_data(tmp_path / "labelled.csv").train.labels is not None
    write_csv(tmp_path / "plain.csv", header, rows)
    plain = open_data(tmp_path / "plain.csv")
    assert plain.train.labels is None and plain.test is None and len(plain.train) == 40
    with pytest.raises(DataError, match="data.label_column.*no column 'kind'"):
        open_data(tmp_path / "plain.csv", label_column="kind")


def test_parquet_tables_read_as_csv_ones(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    header, rows, labels = table_rows(40)
    columns = {name: [r[j] for r in rows] for j, name in enumerate(header)}
    columns = {k: [None if v == "" else (float(v) if k.startswith("n") else v) for v in vs] for k, vs in columns.items()}
    pq.write_table(pa.table({**columns, "label": labels}), tmp_path / "t.parquet")
    write_csv(tmp_path / "t.csv", header + ["label"], [r + [y] for r, y in zip(rows, labels)])
    a, b = open_data(tmp_path / "t.parquet"), open_data(tmp_path / "t.csv")
    assert np.allclose(a.train.rows, b.train.rows, atol=1e-5) and (a.train.labels == b.train.labels).all()


def test_views_mask_add_noise_and_swap_within_the_batch():
    row = torch.stack([torch.arange(10.0), torch.ones(10)])
    spec = TableViewSpec(feature_mask_p=0.5, noise_p=1.0, noise_std=0.01, swap_p=0.5)
    view, _ = make_table_view(row, spec, 0, random.Random(0))
    again, _ = make_table_view(row, spec, 0, random.Random(0))
    assert view.shape == (3, 10) and torch.equal(view, again)
    hidden = view[1] == 0
    assert 0 < hidden.sum() < 10 and (view[0][hidden] == 0).all()
    other = torch.stack([torch.full((10,), 100.0), torch.ones(10), torch.zeros(10)])
    batch = collate_rows([view, other])
    swapped = view[2] > 0
    assert batch.shape == (2, 2, 10) and (batch[0, 0][swapped] == 100).all()
    assert torch.equal(batch[0, 0][~swapped], view[0][~swapped])


def test_feature_subsets_are_disjoint_from_the_targets():
    masks = FeatureSubsets(num_targets=2, target_ratio=0.25, context_ratio=0.5)(( 12,), random.Random(0))
    assert masks["targets"].shape == (2, 3) and masks["context"].shape == (6,)
    assert not set(masks["context"].tolist()) & set(masks["targets"].flatten().tolist())
    with pytest.raises(ValueError, match="leave no context"):
        FeatureSubsets(num_targets=4, target_ratio=0.3).counts(10)


def test_the_encoder_embeds_categories_and_missing_values():
    torch.manual_seed(0)
    encoder = build_backbone("table_transformer_tiny", 1, cardinalities=[0, 3], embed_dim=16, depth=1,
                             num_heads=2).eval()
    rows = torch.tensor([[[0.5, 2.0], [1.0, 1.0]], [[0.5, 2.04], [1.0, 1.0]], [[0.5, 1.0], [1.0, 1.0]],
                         [[0.5, 1.0], [1.0, 0.0]]])
    with torch.no_grad():
        out = encoder(rows)
    assert out.shape == (4, 16)
    assert torch.allclose(out[0], out[1], atol=1e-6)  # a little noise never changes a category
    assert not torch.allclose(out[0], out[2]) and not torch.allclose(out[2], out[3])  # missing is its own token
    with pytest.raises(ConfigError, match="column layout from the data"):
        build_backbone("table_transformer_tiny", 1)


def test_flatten_pooling_puts_every_feature_token_side_by_side():
    torch.manual_seed(0)
    encoder = build_backbone("table_transformer_tiny", 1, cardinalities=[0, 3, 0], embed_dim=16, depth=1,
                             num_heads=2, num_registers=2, global_pool="flatten").eval()
    rows = torch.rand(5, 2, 3)
    rows[:, 1] = 1.0
    with torch.no_grad():
        out, tokens = encoder(rows), encoder.forward_tokens(rows)["patches"]
    assert encoder.num_features == 48 and out.shape == (5, 48)
    assert torch.equal(out.view(5, 3, 16), tokens)  # feature j's token at columns 16 j .. 16 j + 15, no registers


def test_gbdt_protocol_scores_features():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    features = torch.from_numpy(rng.standard_normal((300, 4)) + labels[:, None] * 2).float()
    y = torch.from_numpy(labels)
    result = PROTOCOLS["gbdt"].run(FeatureSplits(features[:200], y[:200], features[200:], y[200:]),
                                   PROTOCOLS["gbdt"].settings(), 0)
    assert result["gbdt_top1"] > 0.9


def test_gbdt_projects_wide_features_on_their_principal_components():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    signal = rng.standard_normal((300, 1)) + 3 * labels[:, None]
    features = torch.from_numpy(np.hstack([signal * 5, rng.standard_normal((300, 40))])).float()  # 41 wide
    y = torch.from_numpy(labels)
    splits = FeatureSplits(features[:200], y[:200], features[200:], y[200:])
    train, test = PROTOCOLS["gbdt"].principal_components(splits.train, splits.test, 8)
    assert train.shape == (200, 8) and test.shape == (100, 8)
    assert torch.allclose(train.mean(0), torch.zeros(8, dtype=train.dtype), atol=1e-9)
    messages = []
    result = PROTOCOLS["gbdt"].run(splits, PROTOCOLS["gbdt"].settings(max_features=8), 0, log=messages.append)
    assert result["gbdt_top1"] > 0.9 and "41 features projected on their 8 leading principal components" in messages[0]


def test_the_generated_factor_table_hides_its_class_in_a_few_mutually_predictive_columns():
    splits = open_data("table-factors")
    again = open_data("table-factors")
    assert (len(splits.train), len(splits.test)) == (1500, 500)
    np.testing.assert_array_equal(splits.train.rows, again.train.rows)  # a fixed seed: the same demo everywhere
    assert sorted(np.bincount(splits.test.labels)) == [83, 83, 83, 83, 84, 84]  # stratified, 6 balanced classes
    assert sorted(c for c in splits.train.table_stats.cardinalities if c) == [4, 4]  # two categorical columns
    values = splits.train.rows[:, 0]
    numeric = [j for j, c in enumerate(splits.train.table_stats.cardinalities) if not c]
    correlation = np.abs(np.corrcoef(values[:, numeric].T)) - np.eye(len(numeric))
    # the signal columns predict one another; the noise columns are independent of everything
    strongly_tied = (correlation.max(axis=1) > 0.3).sum()
    assert 8 <= strongly_tied <= 12
