"""Benchmark: do annotators wait? N simulated annotators, each taking T seconds per item, against the real sampler.

The app's own background sampler (same thread, same settings, the default model unless --model) fills a fresh
DuckDB file with the seed prompts while N threads claim an item, "read" it for T seconds, submit a ranking and
claim the next. Reports, after a warm-up (the first 3 minutes: the model loads and the queue fills):
- the share of claims that found the next item ready at once (target >= 90% with 2 annotators at 30 s),
- the median and longest wait for an item,
- how long the claim and submit calls took while the sampler generated in the same process (the work a page
  does on submit; if generation slowed it, this is where it would show).

    python bench/annotation.py                                   # 2 annotators x 30 s, 10 minutes
    python bench/annotation.py --annotators 3 --seconds-per-item 20 --minutes 6
"""

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from data import annotation
from data.importers import import_prompts, seed_prompts_path
from data.settings import load_settings, save_settings
from data.store import Store
from orchestration.sampler import BackgroundSampler, sampling_params

READY_WITHIN_S = 0.5  # a claim answered this fast found its item ready (one poll of the page at most)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotators", type=int, default=2)
    parser.add_argument("--seconds-per-item", type=float, default=30.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warm-up-minutes", type=float, default=3.0)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    return parser.parse_args()


def annotate(store: Store, name: str, seconds_per_item: float, until: float, claims: list, calls: list) -> None:
    """Claim, read, rank (first response best), submit, until the end time; record every claim's wait."""
    annotator_id = annotation.ensure_annotator(store, name)
    while time.monotonic() < until:
        asked = time.monotonic()
        started = time.perf_counter()
        item = annotation.claim_next_item(store, annotator_id)
        calls.append(time.perf_counter() - started)
        while item is None and time.monotonic() < until:
            time.sleep(0.2)  # the page polls every 2 s; finer here so the wait is measured, not rounded
            item = annotation.claim_next_item(store, annotator_id)
        if item is None:
            return
        claims.append({"at": asked, "wait": time.monotonic() - asked})
        time.sleep(seconds_per_item)
        started = time.perf_counter()
        annotation.submit_ranking(store, annotator_id, item.batch_id, [[i] for i in item.response_ids])
        calls.append(time.perf_counter() - started)


def main() -> int:
    args = parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.duckdb")
        import_prompts(store, str(seed_prompts_path()))
        save_settings(store, {"generator_model": args.model})
        settings = load_settings(store)
        print(
            f"settings: {json.dumps(sampling_params(settings).to_dict())}, batch_rows {settings['batch_rows']} (None: by device)"
        )
        started = time.monotonic()
        until = started + 60 * args.minutes
        sampler = BackgroundSampler(store, device=args.device)
        sampler.start()
        claims: list[dict] = []
        calls: list[float] = []
        threads = [
            threading.Thread(
                target=annotate, args=(store, f"annotator {n}", args.seconds_per_item, until, claims, calls)
            )
            for n in range(args.annotators)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            threads[0].join(timeout=30)
            print(
                f"{time.monotonic() - started:5.0f} s: {sampler.batches_made} items sampled, {len(claims)} claimed; "
                f"{sampler.status.describe()}" + (f" error: {sampler.last_error}" if sampler.last_error else ""),
                flush=True,
            )
        sampler.stop()
        sampler.join(timeout=120)
        status = sampler.status
        store.close()

    counted = [claim for claim in claims if claim["at"] >= started + 60 * args.warm_up_minutes]
    waits = [claim["wait"] for claim in counted]
    ready = sum(wait <= READY_WITHIN_S for wait in waits)
    result = {
        "annotators": args.annotators,
        "seconds_per_item": args.seconds_per_item,
        "minutes": args.minutes,
        "claims_after_warm_up": len(counted),
        "ready_share": ready / len(counted) if counted else None,
        "median_wait_s": statistics.median(waits) if waits else None,
        "max_wait_s": max(waits) if waits else None,
        "first_item_wait_s": claims[0]["wait"] if claims else None,
        "claim_submit_ms_median": 1000 * statistics.median(calls) if calls else None,
        "claim_submit_ms_p95": 1000 * statistics.quantiles(calls, n=20)[-1] if len(calls) >= 20 else None,
        "sampler_tokens_per_s": status.tokens_per_s,
        "tokens_per_response": status.tokens_per_response,
        "annotators_kept_busy_at_30s": status.annotators_kept_busy(int(settings["k"])),
    }
    target = "meets" if result["ready_share"] is not None and result["ready_share"] >= 0.9 else "misses"
    print(
        f"{args.annotators} annotators x {args.seconds_per_item:.0f} s per item, {args.minutes:.0f} min: "
        f"{ready}/{len(counted)} claims after the warm-up found the next item ready "
        f"({(result['ready_share'] or 0):.0%}, {target} target >= 90%); median wait {result['median_wait_s']}, "
        f"longest {result['max_wait_s']}; first item after {result['first_item_wait_s']:.0f} s; "
        f"sampler {status.tokens_per_s or 0:.0f} tokens/s"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
