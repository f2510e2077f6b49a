"""A submission token belongs to one annotator and item; response ids are integers, never truncated."""

import pytest

from data import annotation
from data.annotation import RankingError
from tests.reliability.helpers import fill_items


def test_a_token_reused_by_another_annotator_on_another_item_is_refused(store):
    fill_items(store, 2)
    ada, ben = annotation.ensure_annotator(store, "ada"), annotation.ensure_annotator(store, "ben")
    ada_item, ben_item = annotation.claim_next_item(store, ada), annotation.claim_next_item(store, ben)
    assert ada_item.batch_id != ben_item.batch_id
    first = annotation.submit_ranking(
        store, ada, ada_item.batch_id, [[i] for i in ada_item.response_ids], submission_token="shared"
    )
    with pytest.raises(RankingError, match="token was already used for another item or annotator"):
        annotation.submit_ranking(
            store, ben, ben_item.batch_id, [[i] for i in ben_item.response_ids], submission_token="shared"
        )
    with pytest.raises(RankingError, match="token was already used"):  # same annotator, another item
        annotation.submit_ranking(store, ada, ben_item.batch_id, [[1], [2]], submission_token="shared")
    assert store.query("SELECT id, annotator_id FROM rankings") == [(first, ada)]
    # ben's own ranking, with his own token, still goes through: the refusal wrote nothing and held nothing
    second = annotation.submit_ranking(store, ben, ben_item.batch_id, [[i] for i in ben_item.response_ids])
    assert second != first


@pytest.mark.parametrize("bad_id", [1.9, 2.0, "1", True])
def test_response_ids_that_are_not_integers_are_refused(store, bad_id):
    fill_items(store, 1)
    ada = annotation.ensure_annotator(store, "ada")
    item = annotation.claim_next_item(store, ada)
    second = item.response_ids[1]
    with pytest.raises(RankingError, match="response ids are integers"):
        annotation.submit_ranking(store, ada, item.batch_id, [[second], [bad_id]])
    with pytest.raises(RankingError, match="response ids are integers"):
        annotation.ranks_to_groups({bad_id: 1})
    assert store.query("SELECT count(*) FROM rankings") == [(0,)]
