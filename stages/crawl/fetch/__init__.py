"""The crawl's download side: URL safety, a bounded polite downloader, image checks, a resume journal."""
