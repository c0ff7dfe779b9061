module goadder

go 1.23.2
