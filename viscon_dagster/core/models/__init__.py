"""The model layer's domain: requests and their fingerprints, the pay-once journal, response parsing,
usage and cost accounting, and the tiny offline models. No Dagster imports."""

from viscon_dagster.core.models.request import ImageRef, Message, Part, Request, Response, SamplingParams, Usage

__all__ = ["ImageRef", "Message", "Part", "Request", "Response", "SamplingParams", "Usage"]
