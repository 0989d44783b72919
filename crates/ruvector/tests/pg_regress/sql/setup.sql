-- Run once after the regression database is created.
CREATE EXTENSION ruvector;
