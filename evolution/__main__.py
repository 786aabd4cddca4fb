"""``python -m evolution run -c CONFIG`` — the entry point for ``ray job submit``.

A Ray job's ``python`` is whatever ``python`` is on the PATH of the shell that started Ray on the
head node: with ``.venv/bin/ray start`` and the venv not activated, that is the system
interpreter, and the job used to die deep inside an import (``ModuleNotFoundError: numba``).
Checked first, with the standard library only, so the message names the interpreter and the fix.
"""

import importlib.util
import sys

# what a job needs, by import name (the farm extra): checked before anything imports them
REQUIRED = ("numpy", "pandas", "pyarrow", "numba", "arch", "pydantic", "yaml", "deap", "ray",
            "mlflow", "tqdm")


def missing_modules(names: tuple[str, ...] = REQUIRED) -> list[str]:
    """The required modules this interpreter cannot import."""
    return [n for n in names if importlib.util.find_spec(n) is None]


def interpreter_problem() -> str | None:
    """The message for an interpreter without EMP's dependencies, or None when it has them."""
    missing = missing_modules()
    if not missing:
        return None
    return (f"emp: error: this Python ({sys.executable}) cannot import {', '.join(missing)}: "
            f"it is not the project's environment.\n"
            f"  Under `ray job submit`, the job's `python` is the one on the PATH of the shell "
            f"that ran `ray start`. Fix either way:\n"
            f"  - on every node: `source /abs/path/to/emp/.venv/bin/activate`, then "
            f"`ray stop && ray start ...` again; or\n"
            f"  - name the interpreter in the job: `ray job submit ... -- "
            f"/abs/path/to/emp/.venv/bin/python -m evolution run -c CONFIG`.")


if __name__ == "__main__":
    problem = interpreter_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        sys.exit(2)
    from evolution.cli import main

    sys.exit(main())
