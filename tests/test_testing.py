"""`gradsum.testing.assert_profiles_close`: silent on a close candidate, one line per violation otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from gate_results import per_image, shifted, write_results
from gradsum.gate import GateInputError, load_policy
from gradsum.testing import assert_profiles_close

POLICY = """\
# sky must stay out of the top 3, and no class may move by more than 0.05
resamples: 200
checks:
  - {check: class_shift, statistic: mass_share, tolerance: 0.05}
  - {check: top_k, k: 3, keep_out: [sky], statistic: mass_share, methods: [gradcam]}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "gate.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_a_close_candidate_passes_silently(tmp_path: Path, policy: Path) -> None:
    base = write_results(tmp_path / "base")
    assert_profiles_close(base, write_results(tmp_path / "same"), policy)
    assert_profiles_close(base, base, load_policy(policy))


def test_a_drifted_candidate_raises_with_every_violation_on_its_own_line(
    tmp_path: Path, policy: Path
) -> None:
    base = write_results(tmp_path / "base")
    cand = write_results(tmp_path / "sky", shifted(per_image(), "sky", "mass_share", 0.2))
    with pytest.raises(AssertionError) as raised:
        assert_profiles_close(base, cand, policy)
    assert str(raised.value).splitlines() == [
        f"3 gate check(s) violated ({policy}):",
        "  FAIL class_shift [vit/gradcam]: sky mass_share moved +0.200 [+0.200, +0.200], beyond ±0.05",
        "  FAIL class_shift [vit/gradrollout]: sky mass_share moved +0.200 [+0.200, +0.200], beyond ±0.05",
        "  FAIL top_k [vit/gradcam]: sky entered the top 3 (rank 2 of 5; baseline rank 5; in the top 3 in 100% of "
        "resamples)",
    ]


def test_an_input_error_is_not_an_assertion(tmp_path: Path, policy: Path) -> None:
    base = write_results(tmp_path / "base")
    other = write_results(tmp_path / "other", per_image(images=[f"x{i}" for i in range(40)]))
    with pytest.raises(GateInputError, match="both must profile the same frames"):
        assert_profiles_close(base, other, policy)
