"""scripts/discernment.py's statistics, against values computed by hand (and scipy's documented
example), and its table on audit rows made up so that one metric follows strength and one does not."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from discernment import block_name, markdown, permutation_p, ranks, spearman, table  # noqa: E402


def test_ranks_average_ties():
    assert ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # scipy.stats.spearmanr's documented example: 0.8207826816681233
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert math.isnan(spearman([1, 2, 3], [7, 7, 7]))


def test_permutation_p_is_exact_for_small_n():
    # n = 4: of the 24 orderings only the identity and its reverse reach |rho| = 1.
    assert permutation_p([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(2 / 24)
    # n = 3, rho([1,2,3], [1,3,2]) = 0.5; the 6 orderings give rho 1, .5, .5, -.5, -.5, -1: all |rho| >= .5.
    assert permutation_p([1, 2, 3], [1, 3, 2]) == pytest.approx(1.0)


def _rows():
    rows = []
    strength = {"c100": 1.0, "c200": 5.0, "c300": 9.0, "c400": 20.0, "c500": 40.0}
    for k, label in enumerate(strength):
        for seed in (0, 1):
            rows.append(
                dict(
                    checkpoint=label,
                    seed=str(seed),
                    status="ok",
                    map_entropy=str(1.0 - 0.1 * k + 0.01 * seed),
                    map_peak_share=str([0.3, 0.1, 0.5, 0.2, 0.4][k]),
                    attn_ball="",
                )
            )
    return rows, strength


def test_table_ranks_a_following_metric_and_not_a_scrambled_one():
    rows, strength = _rows()
    result, labels = table(rows, strength)
    by = {r["metric"]: r for r in result}
    assert labels == list(strength)
    assert by["map_entropy"]["rho"] == pytest.approx(-1.0)
    assert by["map_entropy"]["p"] == pytest.approx(2 / 120)
    assert by["map_entropy"]["seed_min"] == by["map_entropy"]["seed_max"] == pytest.approx(-1.0)
    assert by["map_peak_share"]["rho"] == pytest.approx(spearman([0.3, 0.1, 0.5, 0.2, 0.4], [1, 5, 9, 20, 40]))
    assert by["map_peak_share"]["p"] > 0.5
    assert "attn_ball" not in by  # never defined: no row rather than a made-up one
    text = markdown(result, labels, strength, "t")
    assert text.index("`map_entropy`") < text.index("`map_peak_share`")  # strongest first


def test_results_block_keeps_the_rest(tmp_path):
    from rlcam.faithfulness import write_block

    page = tmp_path / "discernment.md"
    page.write_text("# Title\n\nbefore\n<!-- discernment:begin -->\nold\n<!-- discernment:end -->\nafter\n")
    write_block(page, block_name("gradcam"), "new")
    assert block_name("rise") == "discernment-rise"
    assert page.read_text() == "# Title\n\nbefore\n<!-- discernment:begin -->\nnew\n<!-- discernment:end -->\nafter\n"
