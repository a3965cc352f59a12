"""Build-time validation helpers that turn config mistakes into clear
errors naming the key."""
import difflib
from typing import Iterable, Sequence


def reject_unknown_keys(owner: str, given: dict, known: Iterable[str]) -> None:
    """Raise ``TypeError`` for keys in ``given`` that ``owner`` does not
    take, with the closest known key as a suggestion."""
    known = sorted(known)
    problems = []
    for key in given:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        problems.append(f"'{key}'{hint}")
    if problems:
        raise TypeError(f"{owner} got unknown config key(s) "
                        f"{', '.join(problems)}; valid keys: "
                        f"{', '.join(known)}")


def check_per_stage(name: str, values: Sequence, num_stages: int) -> list:
    values = list(values)
    if len(values) != num_stages:
        raise ValueError(f'{name} has {len(values)} entries but the head '
                         f'uses {num_stages} stages (in_index); give one '
                         'value per stage')
    return values


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got '
                         f'{value!r}')
