"""Images in, feature vectors out: decoding, backbones, `tbh features`, the feature-set files."""
