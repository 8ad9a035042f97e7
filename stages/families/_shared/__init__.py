"""What several families share: generative data helpers, conv blocks, the reconstruction loop and generative evaluation."""
