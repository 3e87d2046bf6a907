"""Stage 0's minimal external supervision: CoD captions from an OpenAI-compatible teacher
(`sicog annotate-cod`) and LLaVA-CoT records converted to the four-step format (`sicog convert-cot`)."""
