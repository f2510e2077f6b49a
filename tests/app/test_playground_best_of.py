"""Playground best-of-N: N samples per model with their rewards, the reward model's best kept as the answer."""

from data.registry import record_model


def test_best_of_n_shows_every_sample_with_its_reward_and_keeps_the_best(studio, tiny_model_dir, tiny_reward_dir):
    record_model(studio.store, "policy", "tiny-policy", str(tiny_model_dir))
    record_model(studio.store, "reward", "tiny-rm", str(tiny_reward_dir))
    at = studio.open("playground")
    at.text_area(key="playground_prompt").input("Name a colour.")
    at.selectbox(key="playground_model_a").set_value("tiny-policy")
    at.selectbox(key="playground_model_b").set_value("tiny-policy")
    at.selectbox(key="playground_reward").set_value("tiny-rm")
    at.number_input(key="playground_tokens").set_value(6)
    at.number_input(key="playground_best_of").set_value(3)
    studio.click(at, "Generate")

    result = at.session_state["playground_result"]
    for found, reward, answer in zip(result["samples"], result["rewards"], result["answers"], strict=True):
        assert len(found["responses"]) == len(found["rewards"]) == 3
        if found["best"] is not None:
            assert reward == max(r for r, t in zip(found["rewards"], found["responses"], strict=True) if t.strip())
            assert answer == found["responses"][found["best"]]
    captions = [c.value for c in at.caption if c.value.startswith("Sample ")]
    assert len(captions) == 6 and sum("kept" in caption for caption in captions) >= 1
    assert [m.label for m in at.metric][:1] == ["Reward (tiny-rm, best of 3)"]


def test_best_of_n_without_a_reward_model_is_refused(studio, tiny_model_dir):
    at = studio.open("playground")
    at.text_area(key="playground_prompt").input("Name a colour.")
    at.number_input(key="playground_best_of").set_value(2)
    studio.click(at, "Generate")
    assert "pick a reward model" in at.error[0].value
