"""One process of a 2-process group that a test starts itself (LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set
by the test, as Lightning's own launcher would): runs several ``nca fit`` one after the other in this process,
the group being made once, and writes their exit codes to ``OUT/codes_rank{LOCAL_RANK}.json`` as each ends
(a fit may end the process on purpose).

    python -m tests.helpers.ddp_driver OUT '[["fit", "--config", "a.yaml"], ["fit", ...]]'
"""

import json
import os
import sys
from pathlib import Path

from nca.cli import main

if __name__ == "__main__":
    out, runs = Path(sys.argv[1]), json.loads(sys.argv[2])
    sys.argv = ["nca"]
    codes: list[int] = []
    for args in runs:
        codes.append(main(args))
        (out / f"codes_rank{os.environ['LOCAL_RANK']}.json").write_text(json.dumps(codes))
