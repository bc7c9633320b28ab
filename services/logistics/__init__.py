"""The logistics service: picklists per warehouse and the GeneratePicklist step."""
