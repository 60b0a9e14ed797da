"""Verdict names, their order, and the harness exit statuses.

Scenario verdicts printed by the image are ordered GOOD < SKIP < ERROR < BAD
(TIMEOUT counts as BAD); within a scenario the worst one wins.  The run's
RESULT is BAD or ERROR when any scenario is, GOOD when at least one scenario
is GOOD and the rest GOOD or SKIP, SKIP when nothing ran (image_result).  The harness adds verdicts of
its own for runs whose log is incomplete: TIMEOUT (the run was bounded and
killed), CRASH (reset, triple fault or emulator panic), NO-OUTPUT (no LHV
banner), INCOMPLETE (a log judged offline that simply stops before RESULT) and
UNAVAILABLE (the target cannot run here).
"""

GOOD = "GOOD"
SKIP = "SKIP"
ERROR = "ERROR"
BAD = "BAD"
TIMEOUT = "TIMEOUT"
CRASH = "CRASH"
NO_OUTPUT = "NO-OUTPUT"
INCOMPLETE = "INCOMPLETE"
UNAVAILABLE = "UNAVAILABLE"
BUNDLE = "BUNDLE"            # vmware: a bundle was written, nothing ran

SCENARIO_VERDICTS = (GOOD, SKIP, BAD, ERROR, TIMEOUT)
IMAGE_RESULTS = (GOOD, BAD, SKIP, ERROR, CRASH)

# Order used to pick the worst.  TIMEOUT ranks as BAD for the image; the
# harness-only verdicts rank above everything the image can say.
_RANK = {
    GOOD: 0,
    BUNDLE: 0,
    SKIP: 1,
    UNAVAILABLE: 1,
    ERROR: 2,
    BAD: 3,
    TIMEOUT: 3,
    INCOMPLETE: 4,
    CRASH: 5,
    NO_OUTPUT: 6,
}

# Scenario verdicts that appear as "FAILED <id>: <V>" on the screen.
FAILED_VERDICTS = (BAD, ERROR, TIMEOUT)

# Exit statuses of `python3 -m harness run/judge/compare` (worst run wins).
# 2 is left to argparse (usage errors).
EXIT_STATUS = {
    GOOD: 0,
    BUNDLE: 0,
    BAD: 1,
    SKIP: 3,
    ERROR: 4,
    CRASH: 5,
    TIMEOUT: 6,
    NO_OUTPUT: 7,
    INCOMPLETE: 8,
    UNAVAILABLE: 9,
}
EXIT_USAGE = 2


def rank(verdict):
    return _RANK[verdict]


def image_rank(verdict):
    """Rank for the image's own aggregation (TIMEOUT is BAD)."""
    return _RANK[BAD if verdict == TIMEOUT else verdict]


def worst(verdicts, empty=GOOD):
    """Worst verdict of an iterable (harness order)."""
    best = None
    for v in verdicts:
        if best is None or rank(v) > rank(best):
            best = v
    return empty if best is None else best


def image_result(scenario_verdicts):
    """The RESULT the image must print for these scenario verdicts.

    BAD if any is BAD or TIMEOUT, else ERROR if any is ERROR, else GOOD when at
    least one ran GOOD (skips are listed, not failures), SKIP when all skipped.
    An empty list gives None (the image then owes an ERROR or SKIP, see judge).
    """
    vs = set(BAD if v == TIMEOUT else v for v in scenario_verdicts)
    if not vs:
        return None
    for v in (BAD, ERROR, GOOD):
        if v in vs:
            return v
    return SKIP


def exit_status(verdict):
    return EXIT_STATUS.get(verdict, 4)
