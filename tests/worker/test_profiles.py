"""Model profiles: a folder's sdpo_profile.json, and which value wins."""

import json

import pytest

from worker.profiles import PROFILE_FILE, ModelProfile, ProfileError, folder_profile, resolve_params


def test_a_folder_profile_overrides_the_real_model_defaults(tmp_path):
    assert folder_profile(tmp_path) == ModelProfile()
    (tmp_path / PROFILE_FILE).write_text(json.dumps({"learning_rate": 0.5, "dtype": "bfloat16"}))
    profile = folder_profile(tmp_path)
    assert (profile.learning_rate, profile.dtype) == (0.5, "bfloat16")
    assert profile.max_completion_length == ModelProfile().max_completion_length


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('{"learning_rate": -1}', "learning_rate"),
        ('{"temperature": 2}', "temperature"),  # not a profile field
        ("[1, 2]", "JSON object"),
        ('{"dtype": "float32",\n "x"}', "line 2"),
    ],
)
def test_a_bad_profile_names_the_file_and_the_field(tmp_path, text, names):
    (tmp_path / PROFILE_FILE).write_text(text)
    with pytest.raises(ProfileError) as error:
        folder_profile(tmp_path)
    assert PROFILE_FILE in str(error.value) and names in str(error.value)


def test_the_request_beats_the_operator_which_beats_the_profile():
    profile = ModelProfile(learning_rate=0.1, num_generations=3, max_completion_length=50)
    params = resolve_params(
        "sdpo",
        {"learning_rate": 0.3},
        profile=profile,
        overrides={"learning_rate": 0.2, "num_generations": 5},
    )
    assert (params.learning_rate, params.num_generations) == (0.3, 5)
    assert params.max_completion_length == 50
    baseline = resolve_params("best_of_k", {}, profile=profile, overrides={"learning_rate": 0.2})
    assert baseline.num_generations == 8 and baseline.max_completion_length == 50
