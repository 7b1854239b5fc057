from dp_assets.sample_data.generator import SampleParams, generate

__all__ = ["SampleParams", "generate"]
