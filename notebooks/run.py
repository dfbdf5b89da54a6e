"""Runs every notebook top to bottom against a live service (nbclient, the
`python3` kernel of the virtual environment this runs in). A failing cell
fails the run and is printed with its error.

    ~/.cache/streamfit/venv/bin/python notebooks/run.py              # executed copies to a temporary folder
    ~/.cache/streamfit/venv/bin/python notebooks/run.py --in-place   # refresh the committed outputs
    ~/.cache/streamfit/venv/bin/python notebooks/run.py --out DIR 02-wait-times

The notebooks read their settings from the environment (streamfit_nb.py).
"""

import argparse
import pathlib
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = pathlib.Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="notebooks to run (name or prefix; default: all)")
    ap.add_argument("--in-place", action="store_true", help="write the outputs into the notebooks themselves")
    ap.add_argument("--out", type=pathlib.Path, help="folder for the executed copies")
    ap.add_argument("--timeout", type=int, default=900, help="seconds a cell may take")
    args = ap.parse_args()
    books = sorted(HERE.glob("[0-9][0-9]-*.ipynb"))
    if args.names:
        books = [b for b in books if any(b.stem.startswith(n) or b.name == n for n in args.names)]
        if not books:
            print(f"run: no notebook matches {args.names}", file=sys.stderr)
            return 2
    out = HERE if args.in_place else (args.out or pathlib.Path(tempfile.mkdtemp(prefix="streamfit-notebooks-")))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for book in books:
        nb = nbformat.read(book, as_version=4)
        client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}})
        started = time.monotonic()
        try:
            client.execute()
            status = "ok"
        except CellExecutionError as e:
            failed += 1
            status = "FAILED"
            print(f"run: {book.name}: a cell failed:\n{e}", file=sys.stderr)
        target = out / book.name
        nbformat.write(nb, target)
        print(f"run: {book.name}: {status} in {time.monotonic() - started:.1f} s -> {target}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
