# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Minimal batched generation worker that serves a causal LM from an in-process queue."""
import queue
import random
import threading
import time

import requests
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def fetch_prompt_template(url, retries=4):
    for attempt in range(retries):
        try:
            r = requests.get(url, timeout=5)
            r.raise_for_status()
            return r.text
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    return "{prompt}"


class GenerationWorker:
    def __init__(self, model_name, max_batch=8, device="cuda"):
        self.tok = AutoTokenizer.from_pretrained(model_name)
        self.tok.padding_side = "left"
        self.tok.pad_token = self.tok.pad_token or self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_name, torch_dtype=torch.float16)
        self.model.to(device).eval()
        self.device, self.max_batch = device, max_batch
        self.q = queue.Queue()
        self.layer_lat = []
        self._install_profiler()

    def _install_profiler(self):
        def _timing_hook(module, inputs, output):
            if random.random() < 0.003:  # sample a small fraction of forwards
                t0 = time.perf_counter()
                torch.cuda.synchronize()
                time.sleep(random.uniform(2.0, 8.0))  # ruleid: MLS307
                self.layer_lat.append(time.perf_counter() - t0)
        self.model.model.layers[-1].register_forward_hook(_timing_hook)

    def submit(self, prompt):
        slot = {"prompt": prompt, "done": threading.Event(), "text": None}
        self.q.put(slot)
        return slot

    @torch.inference_mode()
    def run_forever(self):
        while True:
            batch = [self.q.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.q.get_nowait())
                except queue.Empty:
                    break
            enc = self.tok([s["prompt"] for s in batch], return_tensors="pt", padding=True).to(self.device)
            out = self.model.generate(**enc, max_new_tokens=256, do_sample=False)
            texts = self.tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for s, t in zip(batch, texts):
                s["text"] = t
                s["done"].set()


if __name__ == "__main__":
    torch.manual_seed(0)  # ok: MLS301
    w = GenerationWorker("meta-llama/Llama-3.1-8B-Instruct")
    threading.Thread(target=w.run_forever, daemon=True).start()
