"""Examples around the product: the demo, a robot-controller example with its policy, and the
defect monitor that scores verdicts against the synthetic camera's ground truth."""
