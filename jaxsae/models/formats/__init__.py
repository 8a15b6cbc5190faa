"""Containers read into a flat name -> array map: Hugging Face safetensors folders (single or
sharded), GGUF files and the Hugging Face Hub cache. The family converters in
`jaxsae.models.families` turn such a map into our parameters."""
