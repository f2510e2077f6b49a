"""Many annotators at once through one Store: exact counts, no duplicates, no errors."""

from concurrent.futures import ThreadPoolExecutor

from data import annotation
from tests.reliability.helpers import fill_items

ANNOTATORS, SUBMISSIONS = 20, 50


def test_twenty_annotators_fifty_submissions_each(store):
    fill_items(store, ANNOTATORS * SUBMISSIONS)
    ids = [annotation.ensure_annotator(store, f"annotator-{a}") for a in range(ANNOTATORS)]

    def work(annotator_id: int) -> list[int]:
        done = []
        for n in range(SUBMISSIONS):
            item = annotation.claim_next_item(store, annotator_id)
            groups = [[response_id] for response_id in item.response_ids]
            token = f"{annotator_id}-{n}"
            first = annotation.submit_ranking(store, annotator_id, item.batch_id, groups, submission_token=token)
            retried = annotation.submit_ranking(store, annotator_id, item.batch_id, groups, submission_token=token)
            assert retried == first  # a double click or retried request is stored once
            done.append(first)
        return done

    with ThreadPoolExecutor(max_workers=ANNOTATORS) as pool:
        results = list(pool.map(work, ids))

    assert len({ranking_id for done in results for ranking_id in done}) == ANNOTATORS * SUBMISSIONS
    assert store.query("SELECT count(*) FROM rankings") == [(ANNOTATORS * SUBMISSIONS,)]
    assert store.query("SELECT count(DISTINCT batch_id) FROM rankings") == [(ANNOTATORS * SUBMISSIONS,)]
    per_annotator = store.query("SELECT annotator_id, count(*) FROM rankings GROUP BY annotator_id")
    assert sorted(count for _, count in per_annotator) == [SUBMISSIONS] * ANNOTATORS
