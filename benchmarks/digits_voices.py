"""Spoken digits from voices the model never heard: espeak-ng voices, scored on voices left out of training.

The shared set (sample_data/digits) holds one voice. This script makes more with
espeak-ng (Debian: ``apt-get install -y espeak-ng``) into a cache folder (never
committed), trains bptt and scores each held-out voice with ``bptt evaluate
--json``: the model's accuracy beside the majority class and the 1-nearest-neighbour
on mean+std of frames that evaluate prints, and DTW 1-NN on the same files (every
training file a reference), on plain log-mel frames and on the frames the model reads.
Two protocols:

    python benchmarks/digits_voices.py -- OPTIONS           # leave one of VOICES out, train on the other four
    python benchmarks/digits_voices.py --train en-us --train-speeds 130 170 -- OPTIONS
                                                            # the issue's: one voice at the shared set's two
                                                            # speeds, scored on the seven others
    python benchmarks/digits_voices.py --seeds 0 1 2 ...    # bptt's column: the mean of three trainings
    python benchmarks/digits_voices.py --plain --words commands ...
                                                            # bptt's own defaults (no TRAIN preset), on ten
                                                            # command words instead of the digits

Anything after ``--`` goes to ``bptt train`` after TRAIN (after nothing with ``--plain``). Training files: each
training voice at ``--train-speeds`` words/min and pitch TRAIN_PITCH, with espeak-ng's
pitch/formant VARIANTS unless ``--no-variants``; test files: each held-out voice at
every one of SPEEDS in each of TEST_CONDITIONS (pitches and variants no training file
has). The UNSEEN voices are only ever scored.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_line

from bptt_cli import baselines
from bptt_cli.audio import FeatureSettings, load_audio
from bptt_cli.modelfile import load_model_file
from bptt_cli.series import Normaliser

WORD_SETS = {"digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
             "commands": ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]}  # never tuned on
WORDS = WORD_SETS["digits"]  # the set in use (--words)
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc"]  # leave-one-voice-out over these
UNSEEN = ["en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]  # never trained on: scored by --train VOICE only
SPEEDS = [110, 130, 150, 170, 190]
VARIANTS = ["", "+m3", "+f2"]  # plain, a lower male and a female variant of each voice
TRAIN_PITCH = 50  # espeak-ng's default pitch; training files all have it
# held-out voices plain at three pitches (two the training files never had) and in two variants no training file
# has (Klatt's synthesiser, another female voice)
TEST_CONDITIONS = [("", 30), ("", 50), ("", 70), ("+klatt", 50), ("+f4", 50)]
TRAIN = ["--model", "gru", "--hidden", "64", "--layers", "1", "--window", "0", "--batch-size", "16",
         "--clip", "1.0", "--epochs", "60", "--val-fraction", "0"]  # and --seed, one run per --seeds


def file_name(word: int, voice: str, variant: str, speed: int, pitch: int = TRAIN_PITCH) -> str:
    return f"{word}_{WORDS[word]}_{voice}{variant.replace('+', '_')}_s{speed}_p{pitch}.wav"


def generate(folder: Path) -> None:
    """Every digit in every voice: the training variants at the training pitch, the plain voice at the test
    pitches; written once (later runs reuse the folder)."""
    if shutil.which("espeak-ng") is None:
        sys.exit("needs espeak-ng: apt-get install -y espeak-ng")
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {(v, x, TRAIN_PITCH) for v in VOICES for x in VARIANTS} | {(v, x, p) for v in VOICES + UNSEEN
                                                                       for x, p in TEST_CONDITIONS}
    for voice, variant, pitch in sorted(wanted):
        for speed in SPEEDS:
            for word in range(10):
                path = folder / file_name(word, voice, variant, speed, pitch)
                if not path.exists():
                    subprocess.run(["espeak-ng", "-v", voice + variant, "-s", str(speed), "-p", str(pitch),
                                    "-w", str(path), WORDS[word]], check=True)


def labels_csv(path: Path, files: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        writer.writerows([f, WORDS[int(f.split("_")[0])]] for f in files)
    return path


def dtw_accuracy(folder: Path, train_csv: Path, test_csv: Path, settings: FeatureSettings) -> float:
    """DTW 1-NN accuracy on the test files, the training files as references, frames normalised as bptt does."""
    train = load_audio(folder, train_csv, FeatureSettings(**settings.to_dict()))
    test = load_audio(folder, test_csv, FeatureSettings(**settings.to_dict()), train.classes)
    norm = Normaliser.fit(train.frames)
    baselines.REFERENCE_BUDGET = float("inf")  # every training file a reference, however many
    reference = baselines.label_reference([norm.apply(f) for f in train.frames], train.labels, len(train.classes), True)
    truth = np.concatenate(test.labels)
    rows = baselines.label_baselines(reference, [norm.apply(f) for f in test.frames], truth, train.classes)
    return next(r["accuracy"] for r in rows if r["name"] == baselines.DTW)


def score(folder: Path, held: str, train_voices: list[str], variants: list[str], speeds: list[int],
          preset: list[str], extra: list[str], seeds: list[int]) -> dict:
    """Train on ``train_voices`` (all variants) once per seed, score ``held`` (in every one of TEST_CONDITIONS):
    bptt's accuracy per seed and their mean, the evaluate --json baselines, and DTW 1-NN on plain log-mel frames
    and on the frames the model reads (the feature settings its file keeps)."""
    train = [file_name(w, v, x, s) for v in train_voices for x in variants for s in speeds for w in range(10)]
    test = [file_name(w, held, x, s, p) for x, p in TEST_CONDITIONS for s in SPEEDS for w in range(10)]
    tag = f"{held}-{hashlib.sha256(' '.join(train).encode()).hexdigest()[:10]}"
    train_csv, test_csv = labels_csv(folder / f"{tag}-train.csv", train), labels_csv(folder / f"{tag}-test.csv", test)
    per_seed, seconds, confusion = [], 0.0, 0
    for seed in seeds:
        options = [*preset, *extra, "--seed", str(seed)]
        model = folder / f"{hashlib.sha256(' '.join(options + train).encode()).hexdigest()[:10]}.pt"  # reused per voice
        started = time.perf_counter()
        if not model.exists():  # a model trained by the same command on the same files is reused
            subprocess.run(["bptt", "train", str(folder), "--labels", str(train_csv), "-o", str(model), *options],
                           check=True, stderr=subprocess.DEVNULL)
        seconds += time.perf_counter() - started
        out = subprocess.run(["bptt", "evaluate", str(model), str(folder), "--labels", str(test_csv), "--json"],
                             check=True, capture_output=True, text=True)
        figures = json.loads(out.stdout)  # the baselines are fitted on the training files: the same every seed
        per_seed.append(figures["accuracy"])
        confusion = confusion + np.array(figures["confusion"])  # rows: the word said, columns: the word answered
    own = FeatureSettings(**load_model_file(model).data["settings"])
    plain = dtw_accuracy(folder, train_csv, test_csv, FeatureSettings(sample_rate=own.sample_rate))
    return {"held": held, "seconds": seconds, "per seed": per_seed, "errors": commonest_errors(confusion, figures["classes"]),
            "accuracy": sum(per_seed) / len(per_seed),
            "points": figures["sequences"],
            **{row["name"]: row["accuracy"] for row in figures["baselines"] if row["name"] != baselines.DTW},
            "DTW 1-NN, log-mel": plain, "DTW 1-NN, the model's frames": dtw_accuracy(folder, train_csv, test_csv, own)}


def commonest_errors(confusion: np.ndarray, classes: list[str], count: int = 3) -> str:
    """The ``count`` commonest confusions, e.g. "three->two 24, zero->seven 2", over every seed's answers."""
    wrong = confusion * (1 - np.eye(len(classes), dtype=confusion.dtype))
    order = np.argsort(wrong, axis=None)[::-1][:count]
    said, answered = np.unravel_index(order, wrong.shape)
    return ", ".join(f"{classes[i]}->{classes[j]} {wrong[i, j]}" for i, j in zip(said, answered) if wrong[i, j]) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", choices=sorted(WORD_SETS), default="digits",
                        help="the ten words said: digits, or ten command words no option was tuned on")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the generated WAVs and models go (default: bptt-WORDS-voices in the temp folder)")
    parser.add_argument("--plain", action="store_true",
                        help="train with bptt's own defaults and the options after -- only, not TRAIN's")
    parser.add_argument("--train", default=None, help="train on this voice only and score every other voice "
                        "(default: leave one voice out, train on the rest)")
    parser.add_argument("--train-speeds", type=int, nargs="+", default=SPEEDS, choices=SPEEDS,
                        help="the training files' speeds (words/min; default all): 130 170 is the shared set's two")
    parser.add_argument("--no-variants", action="store_true", help="train on the plain voices only (no variants)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train once per seed; bptt's column is the mean over them (default: 0)")
    parser.add_argument("extra", nargs="*", help="options for 'bptt train' (after --)")
    args = parser.parse_args()
    global WORDS
    WORDS = WORD_SETS[args.words]
    cache = args.cache or Path(tempfile.gettempdir()) / ("bptt-digits-voices" if args.words == "digits"
                                                         else f"bptt-{args.words}-voices")
    preset = [] if args.plain else TRAIN
    variants = [""] if args.no_variants else VARIANTS
    generate(cache)
    print(machine_line())
    print(f"bptt train {' '.join(preset + args.extra)}; words {' '.join(WORDS)}; training variants {variants}, speeds {args.train_speeds}, "
          f"pitch {TRAIN_PITCH}; held-out voices in {TEST_CONDITIONS} (variant, pitch)")
    rows = []
    held_out = [v for v in VOICES + UNSEEN if v != args.train] if args.train else VOICES
    for held in held_out:
        train_voices = [args.train] if args.train else [v for v in VOICES if v != held]
        rows.append(score(cache, held, train_voices, variants, args.train_speeds, preset, args.extra, args.seeds))
        row = rows[-1]
        print(f"{held:16} bptt {row['accuracy']:6.1%} (seeds {args.seeds}: "
              + ", ".join(f"{a:.1%}" for a in row["per seed"]) + ")  " + "  ".join(
            f"{k} {row[k]:6.1%}" for k in row if k not in ("held", "seconds", "accuracy", "points", "per seed", "errors"))
              + f"  ({row['points']} utterances, trained in {row['seconds']:.0f} s; bptt's commonest errors over the "
              f"seeds: {row['errors']})", flush=True)
    print_table(rows)
    total = sum(r["points"] for r in rows)
    print("\nbptt over all voices per seed: " + ", ".join(
        f"seed {seed} {sum(r['per seed'][i] * r['points'] for r in rows) / total:.1%}" for i, seed in enumerate(args.seeds)))


def print_table(rows: list[dict]) -> None:
    """The markdown table of the README: bptt beside the baselines per held-out voice, and over all of them."""
    names = [k for k in rows[0] if k not in ("held", "seconds", "points", "per seed", "errors")]
    total = sum(r["points"] for r in rows)
    mean = {"held": "all voices", "points": total, **{k: sum(r[k] * r["points"] for r in rows) / total for k in names}}
    print("\n| held-out voice | utterances | " + " | ".join("bptt" if k == "accuracy" else k for k in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for row in [*rows, mean]:
        print(f"| {row['held']} | {row['points']} | " + " | ".join(f"{row[k]:.1%}" for k in names) + " |")

if __name__ == "__main__":
    main()
