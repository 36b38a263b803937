"""Machine profiles: a valid one is applied; a missing, stale or corrupt one means defaults plus how to tune."""

from __future__ import annotations

import json
import shutil

import pytest

from tango_edge import Cascade, CascadeConfig
from tango_edge.profile import apply_profile, cpu_isa, load_profile, profile_path, save_profile

TUNED = {"tiers": [{"batch_size": 8, "streams": 1}, {"batch_size": 4, "streams": 0}]}
DEFAULTS = CascadeConfig()


def tuned_settings(config: CascadeConfig) -> dict:
    return {"tiers": [{"batch_size": config.batch_size(k), "streams": t.streams} for k, t in enumerate(config.tiers)]}
TIER1_ONLY = {"threshold": 0.0}  # these tests look at settings only: compile one tier, not two


@pytest.fixture
def cascade_dir(tiny_cascade, tmp_path):
    """A private copy of the tiny cascade (profiles are keyed by folder path)."""
    return shutil.copytree(tiny_cascade, tmp_path / "cascade")


def edit_profile(folder, change) -> None:
    path = profile_path(folder)
    profile = json.loads(path.read_text())
    change(profile)
    path.write_text(json.dumps(profile))


def assert_defaults_with_tuning_hint(cascade: Cascade, folder, why: str) -> None:
    assert tuned_settings(cascade.config) == tuned_settings(DEFAULTS)
    assert why in cascade.profile_note
    assert f"tango-edge autotune --models {folder}" in cascade.profile_note


def test_save_then_load_roundtrip(cascade_dir):
    path = save_profile(cascade_dir, {"tiers": [{**t, "extra": 1} for t in TUNED["tiers"]]}, {"rounds": 5})
    assert path == profile_path(cascade_dir) and path.is_file()
    profile, why = load_profile(cascade_dir)
    assert why is None
    assert profile["settings"] == TUNED  # only the tuned fields are stored
    assert profile["measurements"] == {"rounds": 5}
    assert not path.with_suffix(".tmp").exists()


def test_cascade_uses_a_valid_profile(cascade_dir):
    save_profile(cascade_dir, TUNED, {})
    with Cascade.from_dir(cascade_dir, **TIER1_ONLY) as cascade:
        assert cascade.profile_note is None
        assert tuned_settings(cascade.config) == TUNED
        assert cascade.tiers[0].streams == 1


def test_explicit_arguments_beat_the_profile(cascade_dir):
    save_profile(cascade_dir, TUNED, {})
    config, note = apply_profile(CascadeConfig.load(cascade_dir), cascade_dir)
    assert note is None and config.batch_sizes == [8, 4]
    with Cascade.from_dir(cascade_dir, batch_sizes=[3, 5], **TIER1_ONLY) as cascade:
        assert cascade.config.batch_sizes == [3, 5] and cascade.tiers[0].streams == 1


def test_use_profile_false_ignores_it(cascade_dir):
    save_profile(cascade_dir, TUNED, {})
    with Cascade.from_dir(cascade_dir, use_profile=False, **TIER1_ONLY) as cascade:
        assert cascade.config.batch_sizes == DEFAULTS.batch_sizes
        assert cascade.profile_note is None


def test_missing_profile_means_defaults_and_a_hint(cascade_dir):
    with Cascade.from_dir(cascade_dir, **TIER1_ONLY) as cascade:
        assert_defaults_with_tuning_hint(cascade, cascade_dir, "no tuning profile")


def test_a_profile_belongs_to_its_folder(cascade_dir, tmp_path):
    save_profile(cascade_dir, TUNED, {})
    elsewhere = shutil.copytree(cascade_dir, tmp_path / "moved")
    assert load_profile(elsewhere) == (None, "no tuning profile for this machine")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_text("{not json"), id="not-json"),
        pytest.param(lambda path: path.write_text("[]"), id="not-an-object"),
        pytest.param(lambda path: path.write_text(""), id="empty"),
        pytest.param(lambda path: path.write_bytes(b"\xff\xfe\x00"), id="binary"),
    ],
)
def test_corrupt_profile_means_defaults_and_a_hint(cascade_dir, damage):
    save_profile(cascade_dir, TUNED, {})
    damage(profile_path(cascade_dir))
    config, note = apply_profile(CascadeConfig.load(cascade_dir), cascade_dir)
    assert tuned_settings(config) == tuned_settings(DEFAULTS)
    assert "unreadable" in note and f"tango-edge autotune --models {cascade_dir}" in note


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda p: p["settings"]["tiers"][0].update(batch_size=0), id="invalid-batch-size"),
        pytest.param(lambda p: p["settings"]["tiers"][1].pop("streams"), id="missing-field"),
        pytest.param(lambda p: p["settings"]["tiers"].pop(), id="too-few-tiers"),
        pytest.param(lambda p: p.update(version=1), id="version-1-layout"),
        pytest.param(lambda p: p.update(version=99), id="unknown-version"),
        pytest.param(lambda p: p.pop("key"), id="no-key"),
    ],
)
def test_damaged_fields_mean_unreadable(cascade_dir, change):
    save_profile(cascade_dir, TUNED, {})
    edit_profile(cascade_dir, change)
    profile, why = load_profile(cascade_dir)
    assert profile is None and "unreadable" in why


def test_corrupt_profile_through_from_dir(cascade_dir):
    save_profile(cascade_dir, TUNED, {})
    profile_path(cascade_dir).write_text("{truncated")
    with Cascade.from_dir(cascade_dir, **TIER1_ONLY) as cascade:
        assert_defaults_with_tuning_hint(cascade, cascade_dir, "unreadable")


@pytest.mark.parametrize("field", ["openvino", "models", "cpu", "cores", "device"])
def test_stale_profile_names_what_changed(cascade_dir, field):
    save_profile(cascade_dir, TUNED, {})
    edit_profile(cascade_dir, lambda p: p["key"].update({field: "something else"}))
    profile, why = load_profile(cascade_dir)
    assert profile is None and why == f"the tuning profile is stale ({field} changed)"


def test_stale_profile_through_from_dir(cascade_dir):
    save_profile(cascade_dir, TUNED, {})
    edit_profile(cascade_dir, lambda p: p["key"].update(openvino="2020.1"))
    with Cascade.from_dir(cascade_dir, **TIER1_ONLY) as cascade:
        assert_defaults_with_tuning_hint(cascade, cascade_dir, "stale (openvino changed)")


def test_new_model_files_make_the_profile_stale(cascade_dir):
    save_profile(cascade_dir, TUNED, {})
    xml = cascade_dir / "tier2" / "openvino_model.xml"
    xml.write_text(xml.read_text() + "\n<!-- retrained -->\n")
    assert load_profile(cascade_dir) == (None, "the tuning profile is stale (models changed)")


def test_cpu_isa_names_the_widest_int8_instructions():
    assert cpu_isa({"avx2", "avx512f", "avx512_vnni", "amx_int8"}) == "AMX"
    assert cpu_isa({"avx2", "avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert cpu_isa({"sse4_2", "avx2"}) == "AVX2"
    assert cpu_isa(set()) == "unknown instruction set"
