-- A batch row's values as read from the input (JSON object, every column): the grid shows them and
-- exports write them back in the input's column order, whatever part of them formed the run's input.
ALTER TABLE tasks ADD COLUMN row_values TEXT;
