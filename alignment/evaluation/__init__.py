"""What ``stage=eval`` and ``stage=compare`` share: the prompts they ask, how replies are scored and judged, and the
pages compare writes. The stages themselves (alignment/stages/eval.py, compare.py) read as recipes over these."""
