"""Parse: find the files to ingest (scan), read each in a separate worker process (formats), cut the text into
chunks with exact character offsets."""
