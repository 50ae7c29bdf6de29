"""Build the task suite's pools and test sets (docs/study.md, "Task suite") from local clones of
public repositories; the same command as ``python -m tripled_basicsr.study.suite prepare``.

    python benchmarks/prepare_suite.py --src ~/suite_src              # prints the git clone commands
    python benchmarks/prepare_suite.py --src ~/suite_src --clone      # or let it clone them
    python benchmarks/prepare_suite.py --src ~/suite_src --out datasets --tasks dn25_train400,sr4_t91bsd200
    python benchmarks/prepare_suite.py --list                          # tasks, data, repositories
"""
import sys

from tripled_basicsr.study.suite_data import main

if __name__ == '__main__':
    sys.exit(main())
