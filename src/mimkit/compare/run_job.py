"""Entry point of a grid's worker process: ``python -m mimkit.compare.run_job
<run>/compare_job.json`` (see :mod:`mimkit.compare.worker`). A module of its own, imported by
nothing, because ``python -m`` on a module the package already imported warns that it may run
twice."""

import sys

from mimkit.compare.worker import main

if __name__ == "__main__":
    sys.exit(main())
