"""`vip5-app`: a Gradio demo over a trained VIP5 model and its dataset (history, top-10 with images, explanations)."""
