"""Conversations on the pages: chat turns (older ones folded), the answers as the next turn, the last-turn
guideline, and continuing a conversation from the Annotate page (an admin setting)."""

from core.generation import Sample
from data import annotation
from data.continuation import parent_of
from data.prompts import add_prompts, get_prompt
from data.settings import save_settings

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "First question?"},
    {"role": "assistant", "content": "First answer."},
    {"role": "user", "content": "Second question?"},
    {"role": "assistant", "content": "Second answer."},
    {"role": "user", "content": "Last question?"},
]


def add_conversation(studio, responses: list[str]) -> tuple[int, list[int]]:
    add_prompts(studio.store, [CONVERSATION], source="test")
    (prompt_id,) = studio.store.query("SELECT max(id) FROM prompts")[0]
    samples = [Sample(text, "eos", 2) for text in responses]
    batch_id = annotation.add_batch(studio.store, prompt_id, "hand-made", {"k": len(responses)}, samples)
    rows = studio.store.query("SELECT id FROM responses WHERE batch_id = ? ORDER BY position", [batch_id])
    return batch_id, [row[0] for row in rows]


def test_annotate_shows_a_conversation_as_chat_turns_and_continues_it(studio):
    batch_id, (a, b) = add_conversation(studio, ["Answer A.", "Answer B."])
    at = studio.open()
    roles = [message.name for message in at.chat_message]
    assert roles == [m["role"] for m in CONVERSATION] + ["assistant", "assistant"]  # the answers: the next turn
    assert [e.label for e in at.expander if e.label != "Edit this response"] == ["2 earlier messages"]
    shown = [m.value for m in at.markdown]
    assert "Last question?" in shown and "First question?" in shown  # folded turns are in the expander
    assert any("Only the last turn is judged" in text for text in shown)

    at.radio(key=f"annotate_rank_{batch_id}_{a}").set_value(2)
    at.radio(key=f"annotate_rank_{batch_id}_{b}").set_value(1)
    at.text_area(key=f"annotate_follow_up_{batch_id}").set_value("  And why?  ")
    studio.click(at, "Submit ranking")
    (ranking_id, new_id) = studio.store.query("SELECT max(k.id), max(p.id) FROM rankings k, prompts p")[0]
    assert get_prompt(studio.store, new_id) == CONVERSATION + [
        {"role": "assistant", "content": "Answer B."}, {"role": "user", "content": "And why?"}
    ]  # fmt: skip
    assert parent_of(studio.store, new_id) == (1, b, ranking_id)


def test_an_admin_can_turn_continuing_off(studio):
    save_settings(studio.store, {"continue_conversations": False})
    batch_id, _ = add_conversation(studio, ["x", "y"])
    at = studio.open()
    assert not [area for area in at.text_area if area.key == f"annotate_follow_up_{batch_id}"]


def test_single_turn_items_look_as_before(studio):
    studio.add_item("Say hi.", ["Hi!", "Hello!"])
    at = studio.open()
    assert not at.chat_message and not any("last turn" in m.value for m in at.markdown)
