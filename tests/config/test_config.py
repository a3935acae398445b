import pytest

from visionline.config import Project, ProjectConfig, dump_config, init_project, parse_config
from visionline.errors import ConfigError, ProjectNotFoundError


def test_default_config_round_trips_through_yaml():
    config = ProjectConfig()
    assert parse_config(dump_config(config)) == config


def test_model_classes_put_good_first_then_defect_subtypes():
    config = parse_config(
        "classes:\n- {name: good}\n- {name: defect, subtypes: [bruise, rot]}\n- {name: foreign}\n"
    )
    assert config.model_classes() == ["good", "bruise", "rot", "foreign"]
    assert config.defect_labels() == {"defect": ["bruise", "rot"], "foreign": []}


def test_unknown_key_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"unknown key 'goals\.max_false_rejects'; remove it"):
        parse_config("goals:\n  max_false_rejects: 0.1\n")


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"'goals\.max_false_reject_rate' is invalid"):
        parse_config("goals:\n  max_false_reject_rate: 2\n")


def test_threshold_headroom_defaults_to_the_budget_and_may_not_exceed_it():
    assert parse_config("name: x\n").goals.operating_false_reject_rate == 0.02
    headroom = "goals:\n  max_false_reject_rate: 0.05\n  threshold_false_reject_rate: 0.03\n"
    assert parse_config(headroom).goals.operating_false_reject_rate == 0.03
    with pytest.raises(ConfigError, match="must not exceed max_false_reject_rate"):
        parse_config("goals:\n  threshold_false_reject_rate: 0.05\n")


def test_missing_good_class_is_refused():
    with pytest.raises(ConfigError, match="good"):
        parse_config("classes:\n- {name: ok}\n- {name: defect}\n")


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match=r"at line \d+; fix the syntax"):
        parse_config("name: x\nclasses: [\n")


def test_project_is_found_from_a_subdirectory(tmp_path):
    init_project(tmp_path, name="tiles")
    (tmp_path / "a" / "b").mkdir(parents=True)
    project = Project.load(tmp_path / "a" / "b")
    assert project.root == tmp_path.resolve()
    assert project.config.name == "tiles"
    assert project.tracking_uri == f"sqlite:///{tmp_path.resolve()}/.visionline/mlflow.db"
    assert project.blob_store_uri == str(tmp_path.resolve() / ".visionline/store")


def test_remote_uris_are_kept(tmp_path):
    (tmp_path / "visionline.yaml").write_text(
        "storage:\n  blob_store: s3://bucket/prefix\n  tracking_uri: http://mlflow:5000\n"
    )
    project = Project.load(tmp_path)
    assert project.blob_store_uri == "s3://bucket/prefix"
    assert project.tracking_uri == "http://mlflow:5000"


def test_missing_project_says_run_init(tmp_path):
    with pytest.raises(ProjectNotFoundError, match="visionline init"):
        Project.load(tmp_path)


def test_init_refuses_to_overwrite(tmp_path):
    init_project(tmp_path)
    with pytest.raises(ConfigError, match="--force"):
        init_project(tmp_path)
    init_project(tmp_path, name="again", force=True)
    assert Project.load(tmp_path).config.name == "again"


def test_init_on_a_file_names_the_fix_and_keeps_the_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        init_project(target)
    assert target.read_text() == "keep me"
