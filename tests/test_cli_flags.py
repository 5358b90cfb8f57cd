"""One vocabulary of flags across `vit-repro`: the shared flags (`hf_vit_repro.cli_options`) agree
wherever they appear, no subcommand defines its own, and the old spellings (`--output`, `--out`,
`--cpu`) still parse into the new flag's destination with a one-line deprecation message."""

import argparse

import pytest

from hf_vit_repro import cli, cli_options


def subcommands(parser, path=()):
    """(command path, parser) of every leaf subcommand, e.g. (("study", "compute"), parser)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += subcommands(sub, path + (name,))
    return found or [(path, parser)]


@pytest.fixture(scope="module")
def parser():
    return cli.build_parser()


@pytest.fixture(scope="module")
def leaves(parser):
    return subcommands(parser)


def option_actions(sub):
    return {option: action for action in sub._actions for option in action.option_strings}


def signature(action):
    """What must agree between two appearances of a shared flag (help: the shared text; --output-dir
    adds the subcommand's default after it)."""
    return (type(action), action.dest, action.nargs, action.type, action.const, action.default, action.choices,
            action.metavar)


def test_every_subcommand_is_walked(leaves):
    names = {" ".join(path) for path, _ in leaves}
    for expected in ("evaluate", "fewshot", "vtab", "analyze", "data show", "data export-vtab", "demo", "mpp-demo",
                     "push", "export", "study compute", "study data-size", "train", "convert"):
        assert expected in names, names


def test_shared_flags_agree_wherever_they_appear(leaves):
    helps = {"--output-dir": cli_options.OUTPUT_DIR_HELP + " (default: ", "--device": cli_options.DEVICE_HELP,
             "--data-dir": cli_options.DATA_DIR_HELP, "--no-progress": cli_options.NO_PROGRESS_HELP,
             "--skip-unreadable": cli_options.SKIP_UNREADABLE_HELP}
    seen = {flag: {} for flag in cli_options.SHARED_FLAGS}
    for path, sub in leaves:
        for option, action in option_actions(sub).items():
            if option in seen:
                seen[option][" ".join(path)] = action
    for flag, dest in cli_options.SHARED_FLAGS.items():
        where = seen[flag]
        assert where, f"{flag} appears in no subcommand"
        signatures = {name: signature(action) for name, action in where.items()}
        assert len(set(signatures.values())) == 1, (flag, signatures)
        for name, action in where.items():
            assert action.dest == dest, (flag, name)
            if flag == "--output-dir":
                assert action.help.startswith(helps[flag]) and action.help.endswith(")"), (name, action.help)
            else:
                assert action.help == helps[flag], (flag, name, action.help)
    # where each flag is expected (a subcommand that lost one would fail here)
    assert {"evaluate", "fewshot", "vtab", "analyze", "demo", "mpp-demo", "push",
            "study compute", "study data-size"} <= set(seen["--output-dir"])
    assert {"evaluate", "fewshot", "analyze"} <= set(seen["--device"])
    assert {"evaluate", "fewshot", "vtab", "data show", "data export-vtab"} <= set(seen["--data-dir"])
    assert {"evaluate", "fewshot", "vtab", "analyze", "demo", "export"} <= set(seen["--no-progress"])
    assert "evaluate" in seen["--skip-unreadable"]


def test_old_spellings_are_gone_except_as_hidden_deprecated_aliases(leaves):
    for path, sub in leaves:
        for option, action in option_actions(sub).items():
            if option in cli_options.DEPRECATED_SPELLINGS:
                assert isinstance(action, cli_options._Deprecated), (path, option)
                assert action.help == argparse.SUPPRESS, (path, option)
                new = cli_options.DEPRECATED_SPELLINGS[option].split()[0]
                assert option_actions(sub)[new].dest == action.dest, (path, option)


@pytest.mark.parametrize("argv, dest, value, old", [
    (["evaluate", "CKPT", "digits", "--output", "m.json"], "output_dir", "m.json", "--output"),
    (["fewshot", "CKPT", "digits", "--output", "f.json"], "output_dir", "f.json", "--output"),
    (["vtab", "CKPT", "--output", "v"], "output_dir", "v", "--output"),
    (["analyze", "CKPT", "--images", "I", "--out", "a"], "output_dir", "a", "--out"),
    (["evaluate", "CKPT", "digits", "--cpu"], "device", "cpu", "--cpu"),
])
def test_old_spelling_still_works_and_warns(parser, capsys, argv, dest, value, old):
    capsys.readouterr()
    args = parser.parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert old in lines[0] and "deprecated" in lines[0], err
    assert cli_options.DEPRECATED_SPELLINGS[old].split()[0] in lines[0], err
    # the new spelling parses to the same value, silently
    new = cli_options.DEPRECATED_SPELLINGS[old].split()
    index = argv.index(old)
    fresh = argv[:index] + new + ([] if old == "--cpu" else [argv[index + 1]]) + argv[index + 1 + (old != "--cpu"):]
    assert getattr(parser.parse_args(fresh), dest) == value
    assert capsys.readouterr().err == ""


def test_fewshot_classes_parses_into_label_ids(parser):
    assert parser.parse_args(["fewshot", "CKPT", "digits", "--classes", "5", "6", "7"]).classes == [5, 6, 7]
    assert parser.parse_args(["fewshot", "CKPT", "digits"]).classes is None
    with pytest.raises(SystemExit):  # label ids are whole numbers
        parser.parse_args(["fewshot", "CKPT", "digits", "--classes", "five"])


def test_data_dir_one_meaning():
    """A bare FOLDER is the one task's; TASK=FOLDER names one task among several."""
    assert cli_options.data_dir_for(None, "digits") is None
    assert cli_options.data_dir_for(["/d"], "digits") == "/d"
    assert cli_options.data_dir_for(["digits=/d"], "digits") == "/d"
    with pytest.raises(ValueError, match="names task 'cifar10'"):
        cli_options.data_dir_for(["cifar10=/d"], "digits")
    with pytest.raises(ValueError, match="two folders"):
        cli_options.data_dir_for(["/a", "/b"], "digits")
    assert cli_options.data_dirs_for(["/d"], ["digits"]) == {"digits": "/d"}
    assert cli_options.data_dirs_for(["a=/x", "b=/y"], ["a", "b"]) == {"a": "/x", "b": "/y"}
    with pytest.raises(ValueError, match="names no task, but 2 tasks"):
        cli_options.data_dirs_for(["/d"], ["a", "b"])
    with pytest.raises(ValueError, match="FOLDER or TASK=FOLDER"):
        cli_options.data_dirs_for(["a="], ["a"])


def test_data_dir_folder_with_equals_sign_is_a_folder(tmp_path):
    folder = tmp_path / "x=1"
    folder.mkdir()
    assert cli_options.data_dir_for([str(folder)], "digits") == str(folder)


def test_evaluate_device_values():
    from hf_vit_repro.evaluation.classification import _evaluate_on_cpu

    assert _evaluate_on_cpu("cpu") is True
    assert _evaluate_on_cpu(None) is False
    with pytest.raises(ValueError, match="torch device"):
        _evaluate_on_cpu("gpu0")
    with pytest.raises(ValueError, match="cpu or cuda"):
        _evaluate_on_cpu("cuda:1")


def test_precision_flag_has_one_vocabulary(leaves):
    """`--precision` takes the same words with the default auto wherever it appears (vtab: None, the
    recipe's run.mixed_precision, auto in its recipe; export's help says what auto means for an artefact)."""
    from hf_vit_repro.precision import PRECISIONS

    seen = {" ".join(path): option_actions(sub)["--precision"] for path, sub in leaves if "--precision" in option_actions(sub)}
    assert {"evaluate", "fewshot", "analyze", "export"} <= set(seen), sorted(seen)
    for name, action in seen.items():
        default = None if name == "vtab" else "auto"
        assert (action.dest, tuple(action.choices), action.default) == ("precision", PRECISIONS, default), name
    assert "ONNX Runtime" in seen["export"].help and "bf16 MatMul" in seen["export"].help
