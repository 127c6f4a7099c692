"""``attmask-eval``: one subcommand per task (entry points) plus the built-in commands.

Exit status: 0 success, 1 a task or regression failed, 2 bad input (one line on stderr naming the
file and the problem, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__, distributed
from .errors import BadInput, TaskFailed
from .options import add_task_arguments
from .tasks import Task, discover_tasks

log = logging.getLogger("attmask")


class OneLineParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are a single stderr line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is not news
    distributed.silence_non_main_logging()


def _task_parser(sub: argparse._SubParsersAction, task: Task) -> None:
    p = sub.add_parser(task.name, help=task.help, description=task.description or task.help,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_task_arguments(p, task)
    p.set_defaults(func=_run_task_command, task=task)


def _run_task_command(args: argparse.Namespace) -> int:
    from .runner import run_task

    path, record = run_task(args.task, args)
    if path is not None:
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in record["metrics"].items())
        print(f"{record['task']} {record['dataset']}: {metrics}")
        print(f"record: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import commands, data_cmd, demo, regress, report, suite

    parser = OneLineParser(prog="attmask-eval", description="Evaluate self-supervised ViT backbones on the "
                           "standard protocols; one record schema, report and regression checks.")
    parser.add_argument("--version", action="version", version=f"attmask {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    commands.add_inspect_parser(sub)
    commands.add_extract_parser(sub)
    for task in discover_tasks().values():
        _task_parser(sub, task)
    suite.add_parser(sub)
    report.add_parser(sub)
    regress.add_parser(sub)
    data_cmd.add_parser(sub)
    demo.add_parser(sub)
    return parser


def dispatch(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, run ``args.func`` and map the outcome to the exit status (shared by both console scripts).

    0 success, 1 ``TaskFailed``, 2 ``BadInput`` (one stderr line naming the file and the problem).
    """
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except BadInput as exc:
        line = " ".join(str(exc).split())
        sys.stderr.write(f"{prog} {args.command}: error: {line}\n")
        return 2
    except TaskFailed as exc:
        sys.stderr.write(f"{prog} {args.command}: failed: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        distributed.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("attmask-eval", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
