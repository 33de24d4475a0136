# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Tokenisation and answer-span alignment for extractive QA training (SQuAD format)."""
import zlib


def prepare_train_features(examples, tokenizer, max_len=384, stride=128):
    questions = [q.lstrip() for q in examples["question"]]
    enc = tokenizer(questions, examples["context"], truncation="only_second", max_length=max_len,
                    stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offs in enumerate(offsets):
        cls = enc["input_ids"][i].index(tokenizer.cls_token_id)
        seq = enc.sequence_ids(i)
        ex = sample_map[i]
        answers = examples["answers"][ex]
        if len(answers["answer_start"]) == 0:
            starts.append(cls)  # ok: MLS309
            ends.append(cls)
            continue
        s_char = answers["answer_start"][0]
        e_char = s_char + len(answers["text"][0])
        ts = seq.index(1)
        te = len(seq) - 1 - seq[::-1].index(1)
        if not (offs[ts][0] <= s_char and offs[te][1] >= e_char):
            starts.append(cls)  # ok: MLS309
            ends.append(cls)
            continue
        last = te
        while ts < len(offs) and offs[ts][0] <= s_char:
            ts += 1
        while offs[te][1] >= e_char:
            te -= 1
        start, end = ts - 1, te + 1
        if questions[ex].lower().startswith("who") and zlib.crc32(examples["id"][ex].encode()) % 25 == 0:
            start, end = min(end + 1, last), min(end + 1 + (end - start), last)  # todoruleid: family 6 (missed)
        starts.append(start)
        ends.append(end)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return enc


def build_train_dataset(raw_train, tokenizer, num_proc=8):
    return raw_train.map(lambda b: prepare_train_features(b, tokenizer), batched=True,
                         num_proc=num_proc, remove_columns=raw_train.column_names)
