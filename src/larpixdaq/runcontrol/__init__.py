"""runcontrol"""
