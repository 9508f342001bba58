"""One list of targets and builders: the command line offers exactly what the settings accept."""
from __future__ import annotations

import argparse

from gazelle.choices import BUILDERS, DEFAULT_BUILDER, IMAGE_BUILDERS, PAIRS, TARGETS
from gazelle.cli import build_parser


def _choices(parser: argparse.ArgumentParser, command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    return tuple(action.choices or ())


def test_the_command_line_offers_the_targets_and_builders_the_server_knows() -> None:
    parser = build_parser()
    assert _choices(parser, "server", "--target") == TARGETS
    assert _choices(parser, "server", "--builder") == BUILDERS
    assert _choices(parser, "image", "--builder") == IMAGE_BUILDERS


def test_every_target_has_a_default_builder_it_can_run() -> None:
    assert set(DEFAULT_BUILDER) == set(PAIRS) == set(TARGETS)
    assert all(DEFAULT_BUILDER[t] in PAIRS[t] for t in TARGETS)
    assert {b for pair in PAIRS.values() for b in pair} == set(BUILDERS)
