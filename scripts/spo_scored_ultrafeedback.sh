#!/usr/bin/env bash
# SPO with model-scored targets against SPO with one constant target, on real data (CPU, minutes).
#
# The recipe of the README ("Reward models") on the shipped UltraFeedback sample
# (tests/data/ultrafeedback_1k, MIT): a tiny reward model trained on the first 500 training pairs
# scores the other 500; a tiny policy is SFT-trained on those 500, then SPO (β = 0.1) trains from
# it three ways on the same pairs, seed and budget:
#   constant  every pair's target reward gap is target_reward_gap (use_scores: false)
#   gpt4      the data's own GPT-4 ratings give each pair its gap (use_scores: true)
#   rm        the reward model's scores give each pair its gap (use_scores: true, scored file)
#             (the reward model is configs/ultrafeedback/reward_judge.yaml, the study's judge)
# Each policy is then evaluated on the 200 held-out pairs (reward accuracy against the SFT model).
#
#   bash scripts/spo_scored_ultrafeedback.sh [output directory, default runs/spo_scored_uf]
#
set -euo pipefail

OUT=${1:-runs/spo_scored_uf}
DATA=tests/data/ultrafeedback_1k
python -m lit_align.real_model > /dev/null  # the tokenizer directory the configs name
mkdir -p "$OUT"
LOG=(--trainer.logger.init_args.save_dir="$OUT" --trainer.logger.init_args.name= --overwrite=true)

# 1. The reward model: the real-data study's judge recipe (a tiny Llama with SmolLM2's tokenizer,
#    Bradley-Terry, 512 tokens), trained on the first half of the training pairs.
lit-align fit --config configs/ultrafeedback/reward_judge.yaml "${LOG[@]}" \
  --trainer.logger.init_args.version=reward

# 2. Its scores for the other half, in a new file next to the run.
lit-align score --model "$OUT/reward/export" --dataset $DATA/train.jsonl.gz \
  --split 'train[500:]' --output "$OUT/train_b_scored.jsonl" --overwrite true \
  --max_length 512 --max_prompt_length 64

# 3. SFT on the second half (the config's train[500:]).
lit-align fit --config configs/ultrafeedback/sft_tiny.yaml "${LOG[@]}" \
  --trainer.logger.init_args.version=sft

# 4. SPO three ways from the SFT model on the same pairs, then 5. each on the held-out pairs.
spo() {  # name, use_scores, then any data overrides
  local name=$1 use_scores=$2
  shift 2
  lit-align fit --config configs/ultrafeedback/preference_tiny.yaml "${LOG[@]}" \
    --trainer.logger.init_args.version="spo_$name" \
    --model.policy.pretrained="$OUT/sft/export" \
    --model.loss='{"class_path": "lit_align.losses.SPO", "init_args": {"beta": 0.1}}' \
    --model.loss.init_args.use_scores="$use_scores" "$@"
  lit-align eval --policy "$OUT/spo_$name/export" --baseline "$OUT/sft/export" \
    --dataset $DATA/heldout.jsonl.gz --on_bad_rows skip --output_dir "$OUT/spo_$name/eval"
}
spo constant false
spo gpt4 true
spo rm true --data.dataset="$OUT/train_b_scored.jsonl" --data.train_split=train
