"""Prompts: the exact strings lm-evaluation-harness builds for MMLU and ARC."""
import pytest

from tinyqmoe.errors import UsageError
from tinyqmoe.eval.data import Doc
from tinyqmoe.eval.tasks import LEAVES, TASKS, get_tasks, groups_of, leaves_of

MMLU, ARC = TASKS["mmlu"], TASKS["arc_easy"]

Q = Doc("high_school_physics/0", "  What is 2+2? \n", ("3", "4", "5", "22"), 1, "high_school_physics")
SHOT1 = Doc("high_school_physics/dev0", "Unit of force?", ("newton", "joule", "watt", "pascal"), 0,
            "high_school_physics")
SHOT2 = Doc("high_school_physics/dev1", "Speed of light?", ("3e8 m/s", "1 m/s", "0", "c^2"), 0,
            "high_school_physics")


def test_mmlu_zero_shot_prompt():
    assert MMLU.context(Q, []) == (
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")
    assert MMLU.continuations(Q) == [" A", " B", " C", " D"]
    assert MMLU.target(Q) == "B"


def test_mmlu_two_shot_prompt():
    assert MMLU.context(Q, [SHOT1, SHOT2]) == (
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
        "Unit of force?\nA. newton\nB. joule\nC. watt\nD. pascal\nAnswer: A\n\n"
        "Speed of light?\nA. 3e8 m/s\nB. 1 m/s\nC. 0\nD. c^2\nAnswer: A\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:")


def test_mmlu_shots_come_from_the_same_subject_in_order():
    pool = {"high_school_physics": [SHOT1, SHOT2], "anatomy": []}
    assert MMLU.shots_for(Q, pool, 1) == [SHOT1]
    with pytest.raises(UsageError):
        MMLU.shots_for(Q, pool, 3)


def test_arc_prompt_and_continuations():
    d = Doc("x", "Which is a gas?", ("ice", "steam", "rock"), 1)
    assert ARC.context(d, []) == "Question: Which is a gas?\nAnswer:"
    assert ARC.continuations(d) == [" ice", " steam", " rock"]
    shot = Doc("s", "Hot or cold: fire?", ("hot",), 0)
    assert ARC.context(d, [shot]) == "Question: Hot or cold: fire?\nAnswer: hot\n\nQuestion: Which is a gas?\nAnswer:"


def test_real_mmlu_first_test_question_5shot_starts_and_ends_right():
    doc = MMLU.docs("test")[0]
    ctx = MMLU.context(doc, MMLU.shots_for(doc, MMLU.fewshot_pool(), 5))
    assert ctx.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                          "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n")
    assert ctx.endswith("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
                        "\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert ctx.count("\nAnswer:") == 6


def test_lm_eval_task_names():
    assert get_tasks("mmlu, arc_challenge") == ["mmlu", "arc_challenge"]
    assert get_tasks("mmlu_high_school_psychology") == ["mmlu_high_school_psychology"]
    with pytest.raises(UsageError):
        get_tasks("mmlu,hellaswag")
    leaves = leaves_of("mmlu")
    assert len(leaves) == 57 and len(set(leaves)) == 57
    assert {leaf[len("mmlu_"):] for leaf in leaves} == {d.subject for d in MMLU.docs("test")}
    assert groups_of("mmlu") == ["mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"]
    assert [len(leaves_of(g)) for g in groups_of("mmlu")[1:]] == [19, 13, 12, 13]
    assert len(LEAVES["mmlu_anatomy"].docs("test")) == 135


def test_shared_prefix_is_the_context_before_the_question():
    assert MMLU.context(Q, [SHOT1]) == MMLU.shared_prefix(Q, [SHOT1]) + MMLU.render(MMLU.doc_to_text, Q)
    assert MMLU.shared_prefix(Q, [SHOT1]).endswith("Answer: A\n\n")
