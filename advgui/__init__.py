"""advgui: explore adversarial attacks on image classifiers."""
