"""GSM8K for GRPO (book, GRPO programs): the prompt, answer extraction, the two rewards, correctness.

Everything here is a plain function of text, as in the book's scripts, so each rule can be read
and tested on its own:

    prompt      = build_prompt(question)           # the system text, a newline, the question
    completion  = "<reasoning>\\n6 + 15 = 21\\n</reasoning>\\n<answer>\\n21\\n</answer>"
    extract_answer(completion)                     # "21"
    correctness_reward(completion, "21")           # 2.0 (exact) / 1.5 (same single number) / 0.0
    format_reward(completion, "21")              # 0.2 for each of the four tags present: 0.8
    is_correct(completion, "21")                   # the evaluation rule: exact, single or last number

The book evaluates on the decoded prompt + completion; its prompt holds "<answer>\\n...\\n</answer>"
as an example, so a completion without answer tags extracts the placeholder "..." -> None. Here
the functions take the completion alone and give the same verdicts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lm.data.loaders import book_shuffle, data_file, load_gsm8k, optional_file

# The system prompt of GRPO.py and the TRL notebook (the DataParallel notebook drops the blank line).
SYSTEM_PROMPT = ("\nRespond in the following format:\n\n<reasoning>\n...\n</reasoning>\n"
                 "<answer>\n...\n</answer>\n")
FORMAT_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
FORMAT_POINTS = 0.2              # per tag present (the book's code; its markdown says 0.05)
HELD_OUT = 100                   # without gsm8k/test.jsonl: the first 100 shuffled train problems are kept for evaluation

_NUMBER = re.compile(r"-?\d*\.?\d+")
_LAST_NUMBER = re.compile(r"(?:^|\s|=)\s*(-?\d*\.?\d+)\s*$")


@dataclass(frozen=True)
class Problem:
    question: str     # the word problem
    answer: str       # the gold answer: the text after '####', stripped (commas removed)
    solution: str     # the worked solution (the text before '####'), for the SFT warm-up


def load_problems(path: str | Path) -> list[Problem]:
    """GSM8K-format JSONL (`{"question", "answer": "... #### 42"}`) as problems."""
    return [Problem(ex.question, ex.final, ex.answer.rsplit("####", 1)[0].strip()) for ex in load_gsm8k(path)]


def split_problems(data_dir: str | Path) -> tuple[list[Problem], list[Problem]]:
    """(training problems, evaluation problems) of a data dir; evaluation never trains anything.

    With `gsm8k/test.jsonl`: all of train.jsonl, and test.jsonl. Without (the real data here,
    and the book, which never uses GSM8K's test split): train.jsonl shuffled the book's way
    (seed 42), the first HELD_OUT problems for evaluation and the rest for training, as the book's
    DataParallel notebook keeps its first 30.
    """
    train = load_problems(data_file(data_dir, "gsm8k/train.jsonl"))
    test = optional_file(data_dir, "gsm8k/test.jsonl")
    if test is not None:
        return train, load_problems(test)
    shuffled = book_shuffle(train)
    return shuffled[HELD_OUT:], shuffled[:HELD_OUT]


def build_prompt(question: str, system: str = SYSTEM_PROMPT) -> str:
    """The book's `build_prompt([system, user])`: each message stripped, joined by a newline (no chat template)."""
    return "\n".join(m.strip() for m in (system, question))


def format_completion(problem: Problem) -> str:
    """A target completion for the SFT warm-up: the worked solution as reasoning, then the answer.

    The book's 0.5B notebook warms up on chain-of-thought files made by another model; we write
    the worked GSM8K solution (its `<<a+b=c>>` calculator notes removed) in the same tags.
    """
    reasoning = re.sub(r"<<[^>]*>>", "", problem.solution)
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{problem.answer}\n</answer>"


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

def extract_answer(text: str) -> str | None:
    """The text between the last `<answer>` and the `</answer>` after it, stripped; None if there is
    none, or if it is the prompt's placeholder "...".

    >>> extract_answer("<answer>\\n 42 \\n</answer>"), extract_answer("42"), extract_answer("<answer>...</answer>")
    ('42', None, None)
    """
    parts = text.split("<answer>")
    if len(parts) < 2 or "</answer>" not in parts[-1]:
        return None
    answer = parts[-1].split("</answer>")[0].strip()
    return None if answer == "..." else answer


def extract_single_number(text: str | None) -> float | None:
    """The number in `text` if it holds exactly one (`-?\\d*\\.?\\d+`), else None.

    >>> extract_single_number("about 12.5 kg"), extract_single_number("3 and 4")
    (12.5, None)
    """
    if text is None:
        return None
    found = _NUMBER.findall(text)
    return float(found[0]) if len(found) == 1 else None


def extract_last_number(text: str | None) -> float | None:
    """The number that ends `text` (after a space, '=' or the start), with '$' and '%' removed.

    >>> extract_last_number("so the total is $1.5"), extract_last_number("x = 7"), extract_last_number("7 apples")
    (1.5, 7.0, None)
    """
    if text is None:
        return None
    m = _LAST_NUMBER.search(text.replace("$", "").replace("%", ""))
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------
# Rewards and the evaluation rule
# --------------------------------------------------------------------------------------------

def correctness_reward(completion: str, gold: str) -> float:
    """2.0 if the extracted answer equals the gold text, 1.5 if both hold exactly one number and the
    numbers are equal, else 0.0 (the book's `correctness_reward`)."""
    answer = extract_answer(completion)
    if answer == gold:
        return 2.0
    a, g = extract_single_number(answer), extract_single_number(gold)
    return 1.5 if a is not None and g is not None and a == g else 0.0


def format_reward(completion: str, gold: str | None = None) -> float:
    """0.2 for each of `<reasoning>`, `</reasoning>`, `<answer>`, `</answer>` present (at most 0.8).

    `gold` is not used: every reward is a function of (completion, gold answer)."""
    return FORMAT_POINTS * sum(tag in completion for tag in FORMAT_TAGS)


REWARDS = {"correctness": correctness_reward, "format": format_reward}   # summed, unweighted


def combined_reward(completion: str, gold: str) -> float:
    """The book's `combined_reward`: correctness + format (at most 2.8)."""
    return correctness_reward(completion, gold) + format_reward(completion, gold)


def is_correct(completion: str, gold: str) -> bool:
    """The book's evaluation rule: the extracted answer equals the gold text, or the single numbers
    in both are equal, or the last numbers of both are equal."""
    answer = extract_answer(completion)
    if answer is None:
        return False
    if answer == gold:
        return True
    a, g = extract_single_number(answer), extract_single_number(gold)
    if a is not None and g is not None and a == g:
        return True
    a, g = extract_last_number(answer), extract_last_number(gold)
    return a is not None and g is not None and a == g


def has_answer_tags(completion: str) -> bool:
    """The completion holds both answer tags (`<answer>` and `</answer>`): the format GRPO rewards."""
    return "<answer>" in completion and "</answer>" in completion


def last_number(text: str) -> float | None:
    """The last number anywhere in `text` (commas and '$' removed), or None.

    >>> last_number("3 * 4 = 12 coins.\\n#### 12"), last_number("<answer>\\n1,200\\n</answer>"), last_number("none")
    (12.0, 1200.0, None)
    """
    found = _NUMBER.findall(text.replace(",", "").replace("$", ""))
    return float(found[-1]) if found else None


def is_correct_any_format(completion: str, gold: str) -> bool:
    """Right whatever the format: the last number of the completion equals the gold answer's.

    Not the book's rule (which needs the answer tags); it separates "can solve" from "uses the format"."""
    a, g = last_number(completion), last_number(gold)
    return a is not None and a == g


def accuracy(completions: Sequence[str], golds: Sequence[str]) -> float:
    """Fraction of completions that `is_correct` judges right."""
    return sum(is_correct(c, g) for c, g in zip(completions, golds)) / max(len(golds), 1)
