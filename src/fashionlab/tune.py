"""Placeholder until its issue lands: the command exists but refuses to run."""

from fashionlab.errors import FashionlabError


def add_arguments(parser):
    parser.add_argument("args", nargs="*")


def run(args) -> int:
    raise FashionlabError("this command is not implemented yet")
