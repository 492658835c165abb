"""Faces over time: the frame pipeline shared by the live page and video files, face tracking, the live
webcam processor, reading and writing video files, the analysis of a whole video and its per-face summary.

    python -m fer_core.video clip.mp4 --csv clip.csv      # the command (fer_core/video/analyse.py)

Uses model/, faces/ and the ground floor.
"""
