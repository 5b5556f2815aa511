"""The course itself: the pipeline that runs the notebooks per profile, their records, reports and Colab set-up."""
