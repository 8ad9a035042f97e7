from stages.common.errors import run_stage
from stages.tools.serve import main

run_stage(main)
