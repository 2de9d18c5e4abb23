"""Command lines built from config dataclasses (lm.cli): types, defaults, help, bad values; and every
command line built that way states each default once (parse nothing, get the dataclass's defaults)."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

from lm.cli import add_dataclass_flags, dataclass_from_args, option


@dataclass
class Toy:
    steps: int = option(100, "optimizer steps")
    lr: float = option(3e-3, "peak learning rate (100 % of it at the top)")
    name: str = option("run", "a name")
    shuffle: bool = option(True, "shuffle the examples")
    limit: int | None = option(500, "examples used (none: all)")
    budget: Optional[float] = option(None, "token budget (none: from steps)")
    kind: str = option("rnn", "the model", choices=("rnn", "transformer"))


def parser_for(cls=Toy, prefix: str = "", **kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_dataclass_flags(p, cls, prefix, **kw)
    return p


def test_nothing_given_is_the_dataclass_defaults():
    assert dataclass_from_args(Toy, parser_for().parse_args([])) == Toy()


def test_each_annotation_converts_its_flag():
    a = parser_for().parse_args(["--steps", "7", "--lr", "1e-4", "--name", "x", "--no-shuffle", "--limit", "none",
                                 "--budget", "2.5", "--kind", "transformer"])
    assert dataclass_from_args(Toy, a) == Toy(steps=7, lr=1e-4, name="x", shuffle=False, limit=None, budget=2.5,
                                              kind="transformer")
    a = parser_for().parse_args(["--limit", "12", "--budget", "None", "--shuffle"])
    assert (a.limit, a.budget, a.shuffle) == (12, None, True)


def test_prefix_skip_and_overrides():
    p = parser_for(prefix="eval_", skip=("name",))
    a = p.parse_args(["--eval-steps", "3"])
    assert a.eval_steps == 3 and not hasattr(a, "eval_name")
    assert dataclass_from_args(Toy, a, "eval_", name="given") == Toy(steps=3, name="given")


def test_help_is_the_field_help_with_its_default():
    helps = {a.dest: a.help for a in parser_for()._actions if a.dest != "help"}
    assert helps["steps"] == "optimizer steps (default: 100)"
    assert helps["shuffle"] == "shuffle the examples (default: True)"        # once, not twice
    assert helps["limit"] == "examples used (none: all) (default: 500)"
    assert helps["budget"] == "token budget (none: from steps) (default: none)"
    text = parser_for().format_help()                                       # '%' in a help is escaped
    assert "100 % of it" in text and "--limit INT|none" in text and "{rnn,transformer}" in text


@pytest.mark.parametrize("argv, fragment", [
    (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--limit", "lots"], "argument --limit: invalid int (or none) value: 'lots'"),
    (["--kind", "lstm"], "argument --kind: invalid choice: 'lstm'"),
    (["--shuffle", "yes"], "unrecognized arguments: yes"),
])
def test_a_bad_value_exits_2_naming_the_flag(argv, fragment, capsys):
    with pytest.raises(SystemExit) as e:
        parser_for().parse_args(argv)
    assert e.value.code == 2 and fragment in capsys.readouterr().err


def test_a_field_without_default_is_a_required_flag(capsys):
    @dataclass
    class Needs:
        url: str = dataclasses.field(metadata={"help": "the endpoint"})
    assert parser_for(Needs).parse_args(["--url", "u"]).url == "u"
    with pytest.raises(SystemExit) as e:
        parser_for(Needs).parse_args([])
    assert e.value.code == 2 and "--url" in capsys.readouterr().err


def test_configs_a_command_line_cannot_express_are_refused():
    @dataclass
    class NoHelp:
        steps: int = 3
    with pytest.raises(TypeError, match="NoHelp.steps has no help"):
        parser_for(NoHelp)

    @dataclass
    class Listy:
        sizes: tuple = option((1, 2), "sizes")
    with pytest.raises(TypeError, match="Listy.sizes: a flag cannot be made"):
        parser_for(Listy)


# --- every command line built from its dataclasses -----------------------------------------------

def grpo_parser():
    from lm.rl.experiment import build_parser
    return build_parser(), ["--model", "m", "--data-dir", "d", "--out", "o"]


def pretraining_parser():
    from lm.pretraining.__main__ import build_parser
    return build_parser(), ["--model", "rnn", "--data-dir", "d", "--out", "o"]


def labeling_parser():
    from lm.labeling.__main__ import build_parser
    return build_parser(), ["--out", "o"]


PARSERS = {"lm.rl.grpo": grpo_parser, "lm.pretraining": pretraining_parser, "lm.labeling": labeling_parser}


@pytest.mark.parametrize("name", PARSERS)
def test_every_flag_has_help_and_the_help_renders(name):
    parser, _ = PARSERS[name]()
    assert [a.option_strings for a in parser._actions if not (a.help or "").strip()] == []
    assert "--out" in parser.format_help()


@pytest.mark.parametrize("name", PARSERS)
def test_a_bad_number_exits_2_with_the_flag_named(name, capsys):
    parser, required = PARSERS[name]()
    flag = next(a for a in parser._actions if a.type is int).option_strings[0]
    with pytest.raises(SystemExit) as e:
        parser.parse_args(required + [flag, "1.5x"])
    assert e.value.code == 2 and f"argument {flag}: invalid int" in capsys.readouterr().err


def test_the_command_lines_defaults_are_their_dataclasses_defaults():
    """Nothing given: each dataclass comes back as its defaults (GRPO's four: tests/rl/test_grpo.py)."""
    from lm.labeling.hosted import EndpointConfig
    from lm.pretraining.__main__ import TrainFlags
    from lm.pretraining.pretrain import NewsLMConfig
    parser, required = pretraining_parser()
    a = parser.parse_args(required)
    assert dataclass_from_args(NewsLMConfig, a) == NewsLMConfig()
    assert dataclass_from_args(TrainFlags, a) == TrainFlags()
    parser, required = labeling_parser()
    a = parser.parse_args(required)
    assert dataclass_from_args(EndpointConfig, a, url="u") == EndpointConfig("u")
    a = parser.parse_args(required + ["--url", "http://x/v1", "--timeout", "2", "--retries", "0", "--backoff", "0.5",
                                      "--concurrency", "3", "--max-wait", "9"])
    assert dataclass_from_args(EndpointConfig, a) == EndpointConfig("http://x/v1", timeout=2.0, retries=0, backoff=0.5,
                                                                    concurrency=3, max_wait=9.0)
